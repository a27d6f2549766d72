// Resolve an element id to a point the mouse can hit.
// page.evaluate(LOCATE_JS, {id, scroll}) ->
//   {ok: true, x, y, tag, type, editable, select, covered} or {ok: false, error}
// Scrolls the element into view first (as a person would before clicking).
(args) => {
  const st = window.__brlState;
  const ref = st && st.byId.get(args.id);
  const el = ref && ref.deref();
  if (!el) return { ok: false, error: `element ${args.id} is not on the page (it was never listed or the page has changed)` };
  if (!el.isConnected) return { ok: false, error: `element ${args.id} is no longer on the page` };
  if (el.checkVisibility && !el.checkVisibility({ visibilityProperty: true })) {
    const labelled = el.labels && el.labels.length;
    if (!labelled) return { ok: false, error: `element ${args.id} is not visible` };
  }
  // Hidden native inputs are operated through their label, like a person would.
  let target = el;
  let r = el.getBoundingClientRect();
  if ((r.width <= 0 || r.height <= 0) && el.labels && el.labels.length) {
    target = el.labels[0];
    r = target.getBoundingClientRect();
  }
  if (r.width <= 0 || r.height <= 0) return { ok: false, error: `element ${args.id} has no size on screen` };
  // Offsets of enclosing same-origin frames.
  const frames = [];
  for (let w = target.ownerDocument.defaultView; w && w !== window.top; w = w.parent) {
    frames.push(w.frameElement);
  }
  const view = target.ownerDocument.defaultView;
  if (args.scroll) {
    const inView = r.top >= 0 && r.left >= 0 && r.bottom <= view.innerHeight && r.right <= view.innerWidth;
    if (!inView) target.scrollIntoView({ block: "center", inline: "center", behavior: "instant" });
    for (const f of frames) {
      const fr = f.getBoundingClientRect();
      const fv = f.ownerDocument.defaultView;
      if (fr.top < 0 || fr.left < 0 || fr.bottom > fv.innerHeight || fr.right > fv.innerWidth) {
        f.scrollIntoView({ block: "center", inline: "center", behavior: "instant" });
      }
    }
    r = target.getBoundingClientRect();
  }
  let x = r.left + r.width / 2, y = r.top + r.height / 2;
  for (const f of frames) {
    const fr = f.getBoundingClientRect();
    const cs = f.ownerDocument.defaultView.getComputedStyle(f);
    x += fr.left + f.clientLeft + parseFloat(cs.paddingLeft || "0");
    y += fr.top + f.clientTop + parseFloat(cs.paddingTop || "0");
  }
  const hit = target.ownerDocument.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  const covered = !!hit && hit !== target && !target.contains(hit) && !(hit.shadowRoot || target.getRootNode() !== target.ownerDocument);
  const tag = el.tagName.toLowerCase();
  return {
    ok: true, x, y, tag,
    type: tag === "input" ? (el.type || "text").toLowerCase() : "",
    editable: tag === "textarea" || el.isContentEditable ||
      (tag === "input" && !["checkbox", "radio", "button", "submit", "reset", "image", "file", "range", "color"].includes((el.type || "text").toLowerCase())),
    select: tag === "select",
    enabled: !(el.disabled || el.getAttribute("aria-disabled") === "true"),
    covered: covered ? (hit.tagName || "").toLowerCase() + (hit.id ? "#" + hit.id : "") : "",
  };
}
