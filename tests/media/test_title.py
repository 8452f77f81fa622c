"""Title cards: prompts in several scripts set legibly in the shipped fonts (each glyph drawn,
none the .notdef box), per-character fallback, emoji dropped rather than drawn as boxes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from PIL import ImageFont

from reelforge.media.lettering import FONT_FILES, Lettering, character_map, settable
from reelforge.media.title import Lettered, gradient, title_card

PROMPTS = {  # letters of other scripts, some like Latin ones: on purpose
    "German": "Dämmerung über dem Fluss, Straße im Nebel",
    "French": "Un phare à l'aube, où la mer s'écrase — déjà l'été, Noël, œuvre",
    "Russian": "Маяк на рассвете, волны разбиваются о скалы",  # noqa: RUF001
    "Greek": "Ένας φάρος το σούρουπο, τα κύματα σπάνε στα βράχια",
    "Chinese": "黄昏时的灯塔，海浪拍打着岩石。",  # noqa: RUF001
    "Japanese": "夕暮れの灯台、岩に打ち寄せる波。カメラがゆっくり近づく",
}


def text_mask(text: str, width: int = 683, height: int = 384) -> npt.NDArray[np.bool_]:
    """Where the title card of ``text`` differs from its bare gradient: the text and shadow."""
    card = title_card(text, width, height).astype(int)
    mask: npt.NDArray[np.bool_] = np.abs(card - gradient(text, width, height)).max(axis=2) > 16
    return mask


def notdef(font: ImageFont.FreeTypeFont) -> bytes:
    """The bitmap of the font's .notdef glyph (U+FFFF is in no character map)."""
    return bytes(font.getmask("\uffff"))  # the basic layout, as the lettering uses


@pytest.mark.parametrize("language", list(PROMPTS))
def test_every_letter_is_in_a_shipped_font_and_drawn_as_its_own_glyph(language: str) -> None:
    prompt = PROMPTS[language]
    lettering = Lettering(40)
    assert settable(prompt) == prompt  # no character left out
    for char in set(prompt) - {" "}:
        (run,) = lettering.runs(char)
        bitmap = run.font.getmask(char)
        assert bitmap.getbbox() is not None, f"{char!r} draws nothing"
        assert bytes(bitmap) != notdef(run.font), f"{char!r} is drawn as the .notdef box"


@pytest.mark.parametrize("language", list(PROMPTS))
def test_a_prompt_in_any_of_these_languages_is_set_on_the_card(language: str) -> None:
    mask = text_mask(PROMPTS[language])
    assert mask.sum() > 3000  # plenty of ink
    rows = np.flatnonzero(mask.any(axis=1))
    assert rows[0] > 0
    assert rows[-1] < mask.shape[0] - 1


def test_each_character_falls_back_to_the_first_font_that_has_it() -> None:
    runs = Lettering(30).runs("Маяк 灯塔 Été")
    fonts = [str(run.font.path) for run in runs]
    assert [run.text for run in runs] == ["Маяк ", "灯塔", " Été"]
    assert fonts == [str(FONT_FILES[0]), str(FONT_FILES[1]), str(FONT_FILES[0])]


def test_emoji_and_characters_no_font_has_are_dropped_not_boxed() -> None:
    assert settable("Sunset 🌅 at sea 👩‍👩‍👧 \x07") == "Sunset at sea"
    backdrop = gradient("x", 683, 384)
    with_emoji = Lettered("Sunset 🌅 at sea", 683, 384).over(backdrop)
    assert (with_emoji == Lettered("Sunset at sea", 683, 384).over(backdrop)).all()


@pytest.mark.parametrize(("index", "span"), [(0, range(0x20, 0x530)), (1, range(0x4E00, 0x5200))])
def test_the_character_maps_read_agree_with_what_freetype_draws(index: int, span: range) -> None:
    cmap = character_map(FONT_FILES[index])
    font = ImageFont.truetype(str(FONT_FILES[index]), 16, layout_engine=ImageFont.Layout.BASIC)
    box = notdef(font)
    drawn_as_box = {c for c in span if bytes(font.getmask(chr(c))) == box}
    assert drawn_as_box == set(span) - cmap
    assert len(set(span) & cmap) > 300


def test_long_text_wraps_and_cjk_breaks_between_characters() -> None:
    lettering = Lettering(20)
    lines = lettering.wrap("灯" * 40, 200, limit=10)
    assert len(lines) > 1
    assert all(lettering.width(line) <= 200 for line in lines)
    assert "".join(lines) == "灯" * 40
    words = lettering.wrap("a lighthouse at dusk with waves on the rocks", 150, limit=10)
    assert all(lettering.width(line) <= 150 for line in words)
    assert " ".join(words) == "a lighthouse at dusk with waves on the rocks"


def test_the_text_stays_inside_the_area_it_is_given() -> None:
    area = (400.0, 50.0, 640.0, 200.0)
    card = title_card(PROMPTS["German"], 683, 384, area).astype(int)
    mask = np.abs(card - gradient(PROMPTS["German"], 683, 384)).max(axis=2) > 0
    ys, xs = np.nonzero(mask)
    assert xs.min() >= 400
    assert xs.max() < 640
    assert ys.min() >= 50
    assert ys.max() < 200


def test_a_long_prompt_sets_only_the_lines_that_fit_ending_in_an_ellipsis() -> None:
    lettering = Lettering(20)
    assert len(lettering.wrap("word " * 400, 200, limit=3)) == 3
    assert len(lettering.wrap("x" * 2000, 200, limit=3)) == 3
    short, long = text_mask("word " * 5), text_mask("word " * 400)
    rows = np.flatnonzero(long.any(axis=1))
    assert rows[-1] - rows[0] < long.shape[0] * 0.8  # six lines at most, not 80 tiny ones
    assert long.sum() > short.sum()
