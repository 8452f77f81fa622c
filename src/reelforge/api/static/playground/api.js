// The API as the page uses it: every call carries the key from local storage as a bearer
// token; a refusal becomes an ApiError with the API's own message and the field it names.

const KEY_STORE = "reelforge.apiKey";
export const GENERATIONS = "v2/video/generations";

/** The key the user typed, kept in this browser's local storage ("" when none). */
export function storedKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

export function storeKey(key) {
  if (key) localStorage.setItem(KEY_STORE, key);
  else localStorage.removeItem(KEY_STORE);
}

/** An API refusal: `message` as the API wrote it ("field: reason"), `field` the part named. */
export class ApiError extends Error {
  constructor(status, name, message) {
    super(message);
    this.status = status;
    this.name = name;
    this.field = fieldOf(message);
  }
}

/** The request field a reelforge message names: the text before its first ": ". */
export function fieldOf(message) {
  const match = /^([a-z_]+): /.exec(message || "");
  return match ? match[1] : null;
}

function headers(extra) {
  return { Authorization: `Bearer ${storedKey()}`, ...extra };
}

/** A fetch with the key; a non-2xx answer throws ApiError. */
export async function call(path, options = {}) {
  const answer = await fetch(path, { ...options, headers: headers(options.headers) });
  if (!answer.ok) {
    let body = null;
    try {
      body = await answer.json();
    } catch {
      body = null;
    }
    const error = (body && body.error) || {};
    const message = error.message || (body && body.detail) || `HTTP ${answer.status}`;
    throw new ApiError(answer.status, error.name || error.type || "Error", String(message));
  }
  return answer;
}

export async function json(path, options) {
  return (await call(path, options)).json();
}

export function models() {
  return json("v2/models");
}

export function create(body) {
  return json(GENERATIONS, {
    method: "POST",
    body: JSON.stringify(body),
    headers: { "Content-Type": "application/json" },
  });
}

export function generation(id) {
  return json(`${GENERATIONS}?generation_id=${encodeURIComponent(id)}`);
}

export function page(after, limit = 10) {
  const query = new URLSearchParams({ limit: String(limit) });
  if (after) query.set("after", after);
  return json(`${GENERATIONS}?${query}`);
}

/** The request a generation was made from (prompt, seconds, size), read from the OpenAI
 *  dialect's view of it, which keeps the prompt. */
export function request(id) {
  return json(`v1/videos/${encodeURIComponent(id)}`);
}

/** A blob URL of the generation's JPEG thumbnail (revoke it when done). */
export async function thumbnail(id) {
  const answer = await call(`v1/videos/${encodeURIComponent(id)}/content?variant=thumbnail`);
  return URL.createObjectURL(await answer.blob());
}

/** The live event stream of a generation, if the server has one; null where it answers
 *  anything but an event stream (then the caller polls). */
export async function events(id, signal) {
  try {
    const answer = await fetch(
      `${GENERATIONS}/events?generation_id=${encodeURIComponent(id)}`,
      { headers: headers({ Accept: "text/event-stream" }), signal },
    );
    const type = answer.headers.get("content-type") || "";
    if (answer.ok && type.startsWith("text/event-stream") && answer.body) return answer.body;
    if (answer.body) await answer.body.cancel();
  } catch {
    return null;
  }
  return null;
}
