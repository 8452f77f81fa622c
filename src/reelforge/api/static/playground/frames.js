// First and last frames: a file picked or dropped is checked here by the contract's image
// rules (sent by GET /v2/models) with the messages the API would answer, then sent as a
// data: URI. Mirrors src/reelforge/media/intake.py; tests/api/test_playground.py holds the
// two to the same words.

const SIGNATURES = {
  JPEG: [0xff, 0xd8, 0xff],
  PNG: [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a],
};

/** What the image rules refuse in `file`, as the API words it for `field`; null if fine. */
export async function refusal(file, field, rules) {
  if (file.size > rules.max_bytes) {
    const mb = Math.round(rules.max_bytes / (1024 * 1024));
    return `${field}: image is ${file.size} bytes; the limit is ${rules.max_bytes} bytes (${mb} MB)`;
  }
  const head = new Uint8Array(await file.slice(0, 8).arrayBuffer());
  const known = rules.formats.some((format) =>
    (SIGNATURES[format] || []).every((byte, i) => head[i] === byte),
  );
  if (!known) return `${field}: image is not a JPG/JPEG or PNG file`;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    return `${field}: image could not be decoded`;
  }
  const { width, height } = bitmap;
  bitmap.close();
  return geometryRefusal(width, height, field, rules);
}

function geometryRefusal(width, height, field, rules) {
  if (Math.min(width, height) <= rules.min_short_side) {
    return (
      `${field}: image is ${width}x${height}; its shorter side must be greater than ` +
      `${rules.min_short_side} px`
    );
  }
  const ratio = width / height;
  if (!(rules.min_ratio < ratio && ratio < rules.max_ratio)) {
    return (
      `${field}: image is ${width}x${height} (width/height ${ratio.toFixed(3)}); the ratio ` +
      "must be strictly between 2:5 and 5:2"
    );
  }
  return null;
}

/** `file` as a data: URI, the form the create body takes. */
export function dataUri(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

/** Wire a frame's drop zone: `onFile(file | null)` on pick, drop or removal. */
export function wireDrop(zone, onFile) {
  const input = zone.querySelector("input");
  input.addEventListener("change", () => onFile(input.files[0] || null));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (!file) return;
    const picked = new DataTransfer();
    picked.items.add(file);
    input.files = picked.files;
    onFile(file);
  });
  zone.querySelector(".clear").addEventListener("click", () => {
    input.value = "";
    onFile(null);
    input.focus();
  });
}

/** Show `file` (or nothing) in its zone's preview. */
export function preview(zone, file) {
  const img = zone.querySelector("img");
  if (img.src) URL.revokeObjectURL(img.src);
  img.removeAttribute("src");
  img.hidden = !file;
  zone.querySelector(".clear").hidden = !file;
  if (file) {
    img.src = URL.createObjectURL(file);
    img.alt = `Preview of ${file.name}`;
  }
}
