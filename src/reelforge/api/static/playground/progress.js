// Following a generation to its end: the server's event stream where it answers one, else
// polling. Either way `onUpdate` gets the poll answer's shape ({status, progress, video,
// error, and queue_position / eta_seconds where the server sends them}).

import { events, generation } from "./api.js";

const POLL_MS = 1000;
const TERMINAL = new Set(["completed", "error"]);

/** Resolve with the generation's final poll answer, calling `onUpdate` on every change. */
export async function follow(id, onUpdate) {
  const controller = new AbortController();
  const stream = await events(id, controller.signal);
  if (stream) {
    try {
      await readStream(stream, (data) => {
        const view = { ...data };
        if (!view.status) return;
        onUpdate(view);
        if (TERMINAL.has(view.status)) controller.abort();
      });
    } catch {
      // the stream broke or was closed at the end: polling answers from here
    }
  }
  for (;;) {
    const view = await generation(id);
    onUpdate(view);
    if (TERMINAL.has(view.status)) return view;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

/** Call `onData` with each event's JSON `data` (server-sent events' framing). */
async function readStream(stream, onData) {
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const lines = buffer.slice(0, end).split("\n");
      buffer = buffer.slice(end + 2);
      const data = lines
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!data) continue;
      try {
        onData(JSON.parse(data));
      } catch {
        // not JSON (a comment or keep-alive): nothing to show
      }
    }
  }
}

/** A line for the status element: state, queue position and ETA when present. */
export function describe(view) {
  const parts = [`Status: ${view.status}`];
  if (view.queue_position != null) parts.push(`queue position ${view.queue_position}`);
  if (view.eta_seconds != null) parts.push(`about ${Math.round(view.eta_seconds)} s left`);
  if (view.status === "generating" && view.progress != null) parts.push(`${view.progress}%`);
  if (view.status === "error" && view.error) parts.push(`${view.error.name}: ${view.error.message}`);
  return parts.join(" · ");
}
