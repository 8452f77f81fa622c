"""Make the title card's font subsets in ``src/reelforge/media/fonts/`` (run by hand; needs
fontTools: ``pip install fonttools``).

Sources, both SIL Open Font License 1.1 (no reserved name covers "Noto Sans"; Noto CJK's
reserves "Source", which the subset does not use), from Debian's packages:

- ``NotoSans-Regular.ttf`` (fonts-noto-core 20201225-1): Latin, Greek, Cyrillic.
- ``NotoSansCJK-Regular.ttc`` face 2, Noto Sans CJK SC (fonts-noto-cjk 1:20220127): kana,
  the 3755 hanzi of GB 2312 level 1 and the 2965 kanji of JIS X 0208 level 1 (5009 in all:
  everyday Chinese and Japanese), CJK punctuation and full-width forms.

Run: ``python tools/subset_fonts.py NotoSans-Regular.ttf NotoSansCJK-Regular.ttc``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont

OUT = Path(__file__).resolve().parents[1] / "src" / "reelforge" / "media" / "fonts"

LATIN_GREEK_CYRILLIC = [
    (0x0020, 0x024F),  # Basic Latin, Latin-1, Latin Extended-A and -B
    (0x0300, 0x036F),  # combining marks
    (0x0370, 0x03FF),  # Greek
    (0x0400, 0x052F),  # Cyrillic and its supplement
    (0x1E00, 0x1FFF),  # Latin Extended Additional (Vietnamese), Greek Extended
    (0x2000, 0x206F),  # general punctuation
    (0x20A0, 0x20CF),  # currency
    (0x2100, 0x214F),  # letterlike symbols
]
KANA_AND_FORMS = [
    (0x3000, 0x30FF),  # CJK punctuation, hiragana, katakana
    (0x31F0, 0x31FF),  # katakana extensions
    (0xFF00, 0xFFEF),  # full-width and half-width forms
]


def _table(codec: str, rows: range) -> set[int]:
    """The characters of a two-byte EUC table's ``rows`` (lead bytes), decoded by ``codec``."""
    found: set[int] = set()
    for lead in rows:
        for trail in range(0xA1, 0xFF):
            try:
                found.add(ord(bytes([lead, trail]).decode(codec)))
            except UnicodeDecodeError:
                continue
    return found


def _subset(
    source: Path, number: int, codepoints: set[int], features: list[str], target: Path
) -> None:
    font = TTFont(source, fontNumber=number)
    options = subset.Options()
    options.layout_features = features  # Pillow's basic layout: kerning, marks, ligatures
    options.name_IDs = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(codepoints))
    subsetter.subset(font)
    font.save(target)
    print(f"{target.name}: {len(font.getGlyphOrder())} glyphs, {target.stat().st_size} bytes")


def main() -> None:
    latin, cjk = Path(sys.argv[1]), Path(sys.argv[2])
    spans = {c for lo, hi in LATIN_GREEK_CYRILLIC for c in range(lo, hi + 1)}
    _subset(latin, 0, spans, ["kern", "liga", "mark", "mkmk"], OUT / "NotoSans-Subset.ttf")
    hanzi = _table("gb2312", range(0xB0, 0xD8)) | _table("euc_jp", range(0xB0, 0xD0))
    kana = {c for lo, hi in KANA_AND_FORMS for c in range(lo, hi + 1)}
    _subset(cjk, 2, hanzi | kana, [], OUT / "NotoSansCJKsc-Subset.otf")


if __name__ == "__main__":
    main()
