// One walk over the page: interactive elements (with stable ids), visible text.
// Called as page.evaluate(OBSERVE_JS, args) with
//   args = {reset: bool, next: int, root: selector|null, exclude: selector|null,
//           elements: bool, text: bool}
// `root` bounds the walk to one subtree; `exclude` drops matching subtrees (a
// page's own HUD, say) from elements and text.
// Returns {elements: [[id, tag, role, text, label, placeholder, value,
//                      x, y, w, h, enabled, visible, focused, checked], ...],
//          text: str, next: int, url: str}
// Ids live in a WeakMap on the top window (element -> "eN") and a Map of
// WeakRefs (id -> element) the executor resolves. The counter only grows
// within an episode (Python passes it back after navigations), so an id is
// never reused for a different element.
(args) => {
  const top = window;
  let st = top.__brlState;
  if (!st || args.reset) {
    st = { ids: new WeakMap(), byId: new Map(), next: args.next };
    Object.defineProperty(top, "__brlState", { value: st, configurable: true, enumerable: false, writable: true });
  }
  if (st.next < args.next) st.next = args.next;

  const ROLE_BY_TYPE = {
    checkbox: "checkbox", radio: "radio", button: "button", submit: "button", reset: "button",
    image: "button", range: "slider", number: "spinbutton", search: "searchbox", email: "textbox",
    tel: "textbox", text: "textbox", url: "textbox", password: "textbox", date: "textbox",
    "datetime-local": "textbox", month: "textbox", time: "textbox", week: "textbox", color: "button",
    file: "button",
  };
  const ROLES = new Set([
    "button", "link", "checkbox", "radio", "tab", "menuitem", "menuitemcheckbox", "menuitemradio",
    "option", "switch", "textbox", "searchbox", "combobox", "listbox", "slider", "spinbutton",
    "treeitem", "gridcell",
  ]);
  const SKIP = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "HEAD", "META", "LINK", "OPTION", "OPTGROUP", "BR"]);
  const vw = top.innerWidth, vh = top.innerHeight;
  const excluded = args.exclude ? Array.from(document.querySelectorAll(args.exclude)) : [];
  const isExcluded = (el) => excluded.length > 0 && excluded.some((x) => x.contains(el));
  const out = [];
  const texts = [];

  const deepActive = () => {
    let a = document.activeElement;
    for (;;) {
      if (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
      else if (a && (a.tagName === "IFRAME" || a.tagName === "FRAME")) {
        let d = null;
        try { d = a.contentDocument; } catch (e) { d = null; }
        if (!d || !d.activeElement || d.activeElement === d.body) break;
        a = d.activeElement;
      } else break;
    }
    return a;
  };
  const active = deepActive();

  const clip = (s, n) => {
    s = (s || "").replace(/\s+/g, " ").trim();
    return s.length > n ? s.slice(0, n - 1) + "\u2026" : s;
  };

  const implicitRole = (el, tag) => {
    if (tag === "A") return el.hasAttribute("href") ? "link" : "";
    if (tag === "BUTTON" || tag === "SUMMARY") return "button";
    if (tag === "INPUT") return ROLE_BY_TYPE[(el.type || "text").toLowerCase()] || "textbox";
    if (tag === "SELECT") return el.multiple || el.size > 1 ? "listbox" : "combobox";
    if (tag === "TEXTAREA") return "textbox";
    if (el.isContentEditable) return "textbox";
    return "";
  };

  const labelOf = (el, doc) => {
    const aria = el.getAttribute("aria-label");
    if (aria) return aria;
    const by = el.getAttribute("aria-labelledby");
    if (by) {
      const parts = by.split(/\s+/).map((i) => doc.getElementById(i)).filter(Boolean);
      if (parts.length) return parts.map((p) => p.textContent).join(" ");
    }
    if (el.labels && el.labels.length) return el.labels[0].innerText || el.labels[0].textContent;
    return el.getAttribute("title") || el.getAttribute("alt") || "";
  };

  const isInteractive = (el, tag, win, parentPointer) => {
    if (tag === "INPUT") return (el.type || "").toLowerCase() !== "hidden";
    if (tag === "BUTTON" || tag === "SELECT" || tag === "TEXTAREA" || tag === "SUMMARY") return true;
    if (tag === "A" && el.hasAttribute("href")) return true;
    const role = el.getAttribute("role");
    if (role && ROLES.has(role)) return true;
    if (el.isContentEditable && !(el.parentElement && el.parentElement.isContentEditable)) return true;
    if (el.hasAttribute("onclick") || typeof el.onclick === "function") return true;
    if (tag !== "BODY" && tag !== "HTML") {
      const marks = win.__brlListeners;
      if (marks && marks.has(el)) return true;
      const ti = el.getAttribute("tabindex");
      if (ti !== null && +ti >= 0) return true;
    }
    return false;
  };

  const idOf = (el) => {
    let id = st.ids.get(el);
    if (id === undefined) {
      id = "e" + st.next++;
      st.ids.set(el, id);
      st.byId.set(id, new WeakRef(el));
    }
    return id;
  };

  // Walk a document, shadow root or scope element. (ox, oy): offset of its
  // viewport in top-level CSS pixels.
  const walk = (root, ox, oy, win, doc) => {
    const list = root.querySelectorAll("*");
    for (let i = 0; i < list.length; i++) {
      const el = list[i];
      const tag = el.tagName;
      if (SKIP.has(tag) || isExcluded(el)) continue;
      if (el.shadowRoot) walk(el.shadowRoot, ox, oy, win, doc);
      if (tag === "IFRAME" || tag === "FRAME") {
        let d = null;
        try { d = el.contentDocument; } catch (e) { d = null; }
        if (d && d.documentElement) {
          const r = el.getBoundingClientRect();
          const cs = win.getComputedStyle(el);
          const fx = ox + r.left + el.clientLeft + parseFloat(cs.paddingLeft || "0");
          const fy = oy + r.top + el.clientTop + parseFloat(cs.paddingTop || "0");
          if (args.text && d.body) texts.push(d.body.innerText);
          walk(d, fx, fy, d.defaultView, d);
        }
        continue;
      }
      if (!args.elements) continue;
      let pointer = false;
      if (!isInteractive(el, tag, win)) {
        // Elements styled as clickable: only the top of a cursor:pointer subtree.
        const cs = win.getComputedStyle(el);
        if (cs.cursor !== "pointer") continue;
        const p = el.parentElement;
        if (p && win.getComputedStyle(p).cursor === "pointer") continue;
        pointer = true;
      }
      // The id is taken before any rendering-dependent check, so ids follow document
      // order whatever has painted yet (an image still decoding has zero width).
      const id = idOf(el);
      if (el.checkVisibility && !el.checkVisibility({ visibilityProperty: true })) continue;
      const r = el.getBoundingClientRect();
      if (r.width <= 0 || r.height <= 0) {
        // Hidden native checkboxes/radios styled through a label still count.
        if (!(tag === "INPUT" && el.labels && el.labels.length)) continue;
      }
      const x = ox + r.left, y = oy + r.top;
      // Visible: in the viewport and not clipped or covered at its centre (what a click would hit).
      let visible = x < vw && y < vh && x + r.width > 0 && y + r.height > 0 ? 1 : 0;
      if (visible && r.width > 0 && r.height > 0) {
        const hitRoot = typeof root.elementFromPoint === "function" ? root : doc;
        const hit = hitRoot.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
        if (!hit || !(hit === el || el.contains(hit) || (el.labels && Array.from(el.labels).some((l) => l.contains(hit))))) {
          visible = 0;
        }
      }
      const type = tag === "INPUT" ? (el.type || "text").toLowerCase() : "";
      const checkable = type === "checkbox" || type === "radio";
      let text = "", value = "";
      if (tag === "SELECT") {
        text = Array.from(el.options).map((o) => o.label || o.text).join(" | ");
        value = el.selectedIndex >= 0 ? el.options[el.selectedIndex].label || el.options[el.selectedIndex].text : "";
      } else if (tag === "INPUT") {
        if (type === "button" || type === "submit" || type === "reset") text = el.value;
        else if (!checkable) value = el.value;
      } else if (tag === "TEXTAREA") {
        value = el.value;
      } else {
        text = el.innerText;
        if (el.isContentEditable) value = text;
      }
      const ariaChecked = el.getAttribute("aria-checked");
      out.push([
        id, tag.toLowerCase(), el.getAttribute("role") || implicitRole(el, tag) || (pointer ? "clickable" : ""),
        clip(text, 200), clip(labelOf(el, doc), 200), el.getAttribute("placeholder") || "", value,
        x, y, r.width, r.height,
        el.disabled || el.getAttribute("aria-disabled") === "true" ? 0 : 1,
        visible, el === active ? 1 : 0,
        (checkable && el.checked) || ariaChecked === "true" ? 1 : 0,
      ]);
    }
    // Shadow roots are not part of the host's innerText.
    if (args.text && root.nodeType === 11) {
      for (const c of root.children) if (c.innerText) texts.push(c.innerText);
    }
  };

  const scope = args.root ? document.querySelector(args.root) : null;
  let rootText = "";
  if (args.text) {
    const base = scope || document.body;
    if (base && excluded.length) {
      rootText = Array.from(base.children).filter((c) => !isExcluded(c)).map((c) => c.innerText).join("\n");
    } else if (base) {
      rootText = base.innerText || "";
    }
  }
  walk(scope || document, 0, 0, window, document);
  const text = [rootText, ...texts].filter((t) => t && t.trim()).join("\n");
  return { elements: out, text: args.text ? text : "", next: st.next, url: location.href };
}
