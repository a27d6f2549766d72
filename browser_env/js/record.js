// Human demo recorder (browser_env/demo_recorder.py). Installed in every frame with
// context.add_init_script as `(RECORD_JS)(OBSERVE_JS, root, exclude)`.
//
// Capture-phase listeners on window see the person's input before the page
// does and, synchronously, before the event's effect: pointerdown precedes the
// click (and a checkbox's toggle), beforeinput precedes the text change,
// keydown(Enter) precedes the form submission. At that moment they take a
// snapshot with the env's own observer (same stable element ids) and report
// {kind, element_id, value, raw, ...} through the exposed binding
// window.__brlRecord. Typing is coalesced into one TYPE per field, sent with
// the field's final value when the person leaves it (or on Enter, a click
// elsewhere, a scroll, page hide, or Python's flush) and paired with the
// snapshot taken before its first keystroke.
(observe, root, exclude) => {
  if (window.__brlRec) return;
  if (window !== window.top) {
    // Same-origin frames report to the top frame's recorder: one observer, one
    // id space. Cross-origin frames are not observed by the env, so not recorded.
    let top = null;
    try { top = window.top.__brlRec || null; } catch (e) { top = null; }
    if (top) {
      Object.defineProperty(window, "__brlRec", { value: top, enumerable: false });
      install(top);
    }
    return;
  }
  const rec = { pending: null, preSelect: null, wheel: null, dirty: true, next: null };
  Object.defineProperty(window, "__brlRec", { value: rec, enumerable: false });

  rec.send = (kind, data) => {
    try { window.__brlRecord(Object.assign({ kind, t: Date.now() }, data)); } catch (e) { /* binding not ready */ }
  };
  rec.snapshot = () => {
    const st = window.__brlState;
    const next = st ? st.next : rec.next;
    if (next === null || next === undefined) return null;
    try { return observe({ reset: false, next, root, exclude, elements: true, text: true }); } catch (e) { return null; }
  };
  const TEXT_INPUTS = new Set(["", "text", "search", "email", "url", "tel", "password", "number", "date",
    "datetime-local", "month", "time", "week"]);
  rec.editable = (el) => !!el && el.nodeType === 1 && (el.tagName === "TEXTAREA" || el.isContentEditable ||
    (el.tagName === "INPUT" && TEXT_INPUTS.has((el.getAttribute("type") || "").toLowerCase())));
  rec.multiline = (el) => !!el && (el.tagName === "TEXTAREA" || el.isContentEditable);
  const parentOf = (n) => {
    if (n.parentElement) return n.parentElement;
    if (n.parentNode && n.parentNode.host) return n.parentNode.host;  // shadow root -> host
    try { return n.ownerDocument.defaultView.frameElement; } catch (e) { return null; }
  };
  // The indexed element a person's event is about: the target itself, a
  // label's control, the nearest listed ancestor, or else the smallest listed
  // element under the pointer.
  rec.resolve = (target, raw, x, y) => {
    if (!raw) return { id: null, how: "no-snapshot" };
    const st = window.__brlState;
    const listed = new Set(raw.elements.map((r) => r[0]));
    const idOf = (el) => { const id = st && st.ids.get(el); return id && listed.has(id) ? id : null; };
    for (let n = target, depth = 0; n && n.nodeType === 1; n = parentOf(n), depth++) {
      if (n.tagName === "LABEL" && n.control && idOf(n.control)) return { id: idOf(n.control), how: "label" };
      const id = idOf(n);
      if (id) return { id, how: depth === 0 ? "target" : "ancestor" };
    }
    if (x !== undefined && x !== null) {
      let best = null;
      for (const r of raw.elements) {
        const [id, , , , , , , bx, by, bw, bh] = r;
        if (x >= bx && x <= bx + bw && y >= by && y <= by + bh && (!best || bw * bh < best[1])) best = [id, bw * bh];
      }
      if (best) return { id: best[0], how: "point" };
    }
    return { id: null, how: "unindexed" };
  };
  rec.describe = (el) => {
    if (!el || el.nodeType !== 1) return "";
    const cls = typeof el.className === "string" && el.className ? "." + el.className.trim().split(/\s+/).join(".") : "";
    return el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + cls;
  };
  rec.fieldValue = (el) => (el.isContentEditable ? el.innerText : el.value);
  rec.flushType = () => {
    const p = rec.pending;
    if (!p) return;
    rec.pending = null;
    const value = p.field ? rec.fieldValue(p.field) : p.keys;
    if (p.field && value === p.initial) return;  // focus came and went, nothing typed
    rec.send("TYPE", { element_id: p.id, how: p.how, value, raw: p.raw, target: rec.describe(p.field) });
  };
  rec.startType = (field, key) => {
    rec.flushType();
    const raw = rec.snapshot();
    const r = field ? rec.resolve(field, raw) : { id: null, how: "keyboard" };
    rec.pending = { field, id: r.id, how: r.how, raw, keys: key || "", initial: field ? rec.fieldValue(field) : "" };
  };
  rec.takeDirty = () => { const d = rec.dirty; rec.dirty = false; return d; };
  new MutationObserver(() => { rec.dirty = true; }).observe(document, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
  install(rec);

  function install(R) {
    const opts = { capture: true, passive: true };
    const deepTarget = (e) => (e.composedPath && e.composedPath()[0]) || e.target;
    const selectOf = (el) => {
      for (let n = el; n && n.nodeType === 1; n = n.parentElement) if (n.tagName === "SELECT") return n;
      return null;
    };
    // Only this frame's offset is needed for the hit test; nested frames use the ancestor walk.
    const frameOffset = () => {
      try {
        const f = window.frameElement;
        if (!f) return [0, 0];
        const r = f.getBoundingClientRect();
        return [r.left + f.clientLeft, r.top + f.clientTop];
      } catch (e) { return [0, 0]; }
    };
    window.addEventListener("pointerdown", (e) => {
      if (!e.isPrimary || e.button !== 0) return;
      const el = deepTarget(e);
      if (R.pending && R.pending.field && (el === R.pending.field || R.pending.field.contains(el))) return;
      R.flushType();
      R.dirty = true;
      const select = selectOf(el);
      if (select) { R.preSelect = { el: select, raw: R.snapshot() }; return; }
      const raw = R.snapshot();
      const [ox, oy] = frameOffset();
      const r = R.resolve(el, raw, e.clientX + ox, e.clientY + oy);
      R.send("CLICK", { element_id: r.id, how: r.how, raw, target: R.describe(el), editable: R.editable(el) });
    }, opts);
    window.addEventListener("beforeinput", (e) => {
      const el = deepTarget(e);
      const field = R.editable(el) ? el : null;
      if (!field) return;
      // Enter in a single-line field submits (keydown records it); it changes no text.
      if (!R.multiline(field) && (e.inputType === "insertLineBreak" || e.inputType === "insertParagraph")) return;
      if (R.pending && R.pending.field === field) return;
      R.startType(field, "");
    }, opts);
    window.addEventListener("keydown", (e) => {
      if (e.isComposing) return;
      R.dirty = true;
      const el = deepTarget(e);
      if (e.key === "Enter" && !R.multiline(el)) {
        R.flushType();
        const raw = R.snapshot();
        const r = R.resolve(el, raw);
        R.send("PRESS_ENTER", { element_id: r.id, how: r.how, raw, target: R.describe(el) });
        return;
      }
      const select = selectOf(el);
      if (select) { R.preSelect = { el: select, raw: R.snapshot() }; return; }
      if (R.editable(el) || e.ctrlKey || e.metaKey || e.altKey) return;  // fields: see beforeinput
      // Typing with no text field focused (keyboard-driven pages): TYPE without element_id.
      if (e.key.length !== 1 && e.key !== "Backspace") return;
      if (!R.pending || R.pending.field !== null) R.startType(null, "");
      R.pending.keys = e.key === "Backspace" ? R.pending.keys.slice(0, -1) : R.pending.keys + e.key;
    }, opts);
    window.addEventListener("focusout", (e) => {
      if (R.pending && R.pending.field && deepTarget(e) === R.pending.field) R.flushType();
    }, opts);
    window.addEventListener("change", (e) => {
      const el = deepTarget(e);
      if (!el || el.tagName !== "SELECT") return;
      const pre = R.preSelect && R.preSelect.el === el ? R.preSelect.raw : null;
      R.preSelect = null;
      const raw = pre || R.snapshot();
      const r = R.resolve(el, raw);
      const option = el.selectedIndex >= 0 ? el.options[el.selectedIndex] : null;
      const value = option ? option.label || option.text : "";
      R.send("TYPE", { element_id: r.id, how: r.how, value, raw, late: !pre, target: R.describe(el) });
    }, opts);
    window.addEventListener("wheel", (e) => {
      R.flushType();
      R.dirty = true;
      if (!e.deltaY) return;
      const now = Date.now();
      const dir = e.deltaY > 0 ? "down" : "up";
      let w = R.wheel;
      if (!w || now - w.last > 400 || w.dir !== dir) { w = R.wheel = { dir, acc: 0, last: now, sent: 0 }; }
      w.acc += Math.abs(e.deltaY);
      w.last = now;
      // One SCROLL per burst, plus one per further 0.8 viewport (the executor's SCROLL step).
      const unit = Math.max(1, window.top.innerHeight * 0.8);
      if (w.sent === 0 || w.acc > w.sent * unit) {
        w.sent += 1;
        R.send("SCROLL", { element_id: null, value: dir, raw: R.snapshot() });
      }
    }, opts);
    window.addEventListener("pagehide", () => R.flushType(), opts);
    window.addEventListener("scroll", () => { R.dirty = true; }, opts);
  }
}
