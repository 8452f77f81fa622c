// The key's generations, newest first (the list endpoint), each with its thumbnail once
// completed, its status, and a re-run button that fills the form with its request.

import { page, thumbnail } from "./api.js";

/** The history list: `load()` shows the first page again, `more()` the next one. */
export class History {
  constructor(list, moreButton, onRerun) {
    this.list = list;
    this.moreButton = moreButton;
    this.onRerun = onRerun;
    this.after = null;
    moreButton.addEventListener("click", () => this.more());
  }

  async load() {
    for (const img of this.list.querySelectorAll("img")) URL.revokeObjectURL(img.src);
    this.list.replaceChildren();
    this.after = null;
    await this.more();
  }

  async more() {
    const answer = await page(this.after);
    for (const view of answer.data) this.list.append(this.item(view));
    this.after = answer.last_id;
    this.moreButton.hidden = !answer.has_more;
    if (!this.list.children.length) {
      const empty = document.createElement("li");
      empty.className = "empty";
      empty.textContent = "No generations yet.";
      this.list.append(empty);
    }
  }

  item(view) {
    const item = document.createElement("li");
    item.dataset.generationId = view.id;
    const picture = document.createElement("div");
    picture.className = "thumb";
    if (view.status === "completed" && view.video) {
      const img = document.createElement("img");
      img.alt = `Thumbnail of ${view.id}`;
      thumbnail(view.id).then((url) => (img.src = url), () => img.remove());
      picture.append(img);
    }
    const text = document.createElement("div");
    text.className = "meta";
    const state = document.createElement("span");
    state.className = `state ${view.status}`;
    state.textContent = view.status;
    const when = document.createElement("time");
    when.dateTime = new Date(view.created_at * 1000).toISOString();
    when.textContent = new Date(view.created_at * 1000).toLocaleString();
    const name = document.createElement("code");
    name.textContent = `${view.model} · ${view.id.slice(0, 8)}`;
    name.title = view.id;
    text.append(state, when, name);
    const rerun = document.createElement("button");
    rerun.type = "button";
    rerun.textContent = "Re-run";
    rerun.setAttribute("aria-label", `Re-run ${view.id}`);
    rerun.addEventListener("click", () => this.onRerun(view));
    item.append(picture, text, rerun);
    return item;
  }
}
