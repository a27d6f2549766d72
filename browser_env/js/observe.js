// One walk over the page: interactive elements (with stable ids), visible text.
// Called as page.evaluate(OBSERVE_JS, args) with
//   args = {reset: bool, next: int, root: selector|null, exclude: selector|null,
//           elements: bool, text: bool,
//           maxNodes?: int, maxElements?: int, maxTextChars?: int}
// `root` bounds the walk to one subtree; `exclude` drops matching subtrees (a
// page's own HUD, say) from elements and text. The three caps bound the work on
// a huge DOM: the walk stops after maxNodes nodes or maxElements listed elements,
// and the text is cut at maxTextChars; which caps applied is in `capped`.
// Returns {elements: [[id, tag, role, text, label, placeholder, value,
//                      x, y, w, h, enabled, visible, focused, checked,
//                      name, name_from, context, input_type, required, readonly,
//                      min, max, maxlength], ...],
//          text: str, next: int, url: str,
//          capped: {nodes, elements, text_chars}  (each the limit hit, or 0)}
// `name` follows the accessible-name computation where practical
// (aria-labelledby, aria-label, label[for] or a wrapping label, content for
// buttons and links, title, alt, placeholder); `name_from` says which route
// gave it, "inferred" when it is the nearest visible text beside the element in
// its row (`context`), "name"/"id" when it is that attribute and reads as words.
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
  const scope = args.root ? document.querySelector(args.root) : null;
  const out = [];
  const texts = [];
  const maxNodes = args.maxNodes || 50000;
  const maxElements = args.maxElements || 2000;
  const maxTextChars = args.maxTextChars || 200000;
  const capped = { nodes: 0, elements: 0, text_chars: 0 };
  let seen = 0;

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

  // Text of `node` without the subtree of `skip` (a wrapping label's own control).
  const textWithout = (node, skip) => {
    if (!skip || !node.contains(skip)) return node.innerText || node.textContent || "";
    const parts = [];
    const tw = node.ownerDocument.createTreeWalker(node, 4 /* SHOW_TEXT */);
    for (let t = tw.nextNode(); t; t = tw.nextNode()) if (!skip.contains(t)) parts.push(t.textContent);
    return parts.join(" ");
  };

  // The explicit label: aria-labelledby, aria-label, label[for] or wrapping labels, title, alt.
  const labelOf = (el, doc) => {
    const by = el.getAttribute("aria-labelledby");
    if (by) {
      const parts = by.split(/\s+/).map((i) => doc.getElementById(i)).filter(Boolean);
      const t = parts.map((p) => textWithout(p, el)).join(" ");
      if (t.trim()) return [t, "aria-labelledby"];
    }
    const aria = el.getAttribute("aria-label");
    if (aria && aria.trim()) return [aria, "aria-label"];
    if (el.labels && el.labels.length) {
      const t = Array.from(el.labels).map((l) => textWithout(l, el)).join(" ");
      if (t.trim()) return [t, "label"];
    }
    const title = el.getAttribute("title");
    if (title && title.trim()) return [title, "title"];
    const alt = el.getAttribute("alt");
    if (alt && alt.trim()) return [alt, "alt"];
    return ["", ""];
  };

  // Nearest visible text beside `el` within its row: its siblings', then, while
  // the parent holds no other interactive element (it is `el`'s own wrapper),
  // the parent's siblings' (4 levels at most). Preceding first (following first
  // for a checkbox or radio, whose label usually follows). A sibling that is
  // itself interactive is passed over; one that holds interactive elements, or
  // labels another control, belongs to another row, so the search stops there.
  const INTERACTIVE = "a[href],button,input:not([type=hidden]),select,textarea,[role=button]," +
    "[role=link],[role=checkbox],[role=radio],[role=tab],[role=textbox],[role=option],[contenteditable=true]";
  const edgeLine = (t, fromEnd) => {
    const lines = t.split("\n").map((l) => l.trim()).filter(Boolean);
    return lines.length ? (fromEnd ? lines[lines.length - 1] : lines[0]) : "";
  };
  const ownWrapper = (parent, node) => {
    const kids = parent.children;
    if (kids.length > 24) return false; // a long list is not one element's wrapper
    for (const c of kids) if (c !== node && (c.matches(INTERACTIVE) || c.querySelector(INTERACTIVE))) return false;
    return true;
  };
  const besideText = (el, backwards, stopAt) => {
    let node = el;
    for (let depth = 0; depth < 4; depth++) {
      let n = 0;
      for (let s = backwards ? node.previousSibling : node.nextSibling; s && n < 12;
        s = backwards ? s.previousSibling : s.nextSibling, n++) {
        if (s.nodeType === 3) {
          const t = s.textContent.trim();
          if (t) return t;
          continue;
        }
        if (s.nodeType !== 1 || SKIP.has(s.tagName)) continue;
        if (s.matches(INTERACTIVE)) continue;
        if (s.tagName === "LABEL" && s.control && s.control !== el) return "";
        if (s.querySelector(INTERACTIVE)) return "";
        const t = edgeLine(s.innerText || "", backwards);
        if (t) return t;
      }
      const parent = node.parentElement;
      if (!parent || parent === stopAt || parent.tagName === "FORM" || parent.tagName === "BODY") break;
      if (!ownWrapper(parent, node)) break;
      node = parent;
    }
    return "";
  };
  const contextOf = (el, checkable, stopAt) => {
    const first = besideText(el, !checkable, stopAt);
    return first || besideText(el, checkable, stopAt);
  };

  // An attribute value that reads as words ("first-name", "userName"), not a code ("tt", "x7f3").
  const wordy = (v) => {
    if (!v || v.length > 40) return "";
    const parts = v.replace(/([a-z])([A-Z])/g, "$1 $2").split(/[\s_\-.:]+/).filter(Boolean);
    if (!parts.length || parts.length > 5) return "";
    const ok = parts.every((p) => /^[a-zA-Z]{2,}$/.test(p) && /[aeiouyAEIOUY]/.test(p)) &&
      parts.some((p) => p.length >= 3);
    return ok ? parts.join(" ").toLowerCase() : "";
  };

  const NAME_FROM_CONTENT = new Set(["button", "link", "tab", "menuitem", "menuitemcheckbox", "menuitemradio",
    "option", "checkbox", "radio", "switch", "treeitem", "gridcell", "clickable"]);

  // [name, name_from] in the order of the accessible-name computation, then the fallbacks.
  const nameOf = (el, tag, role, text, label, placeholder, context) => {
    if (label[1] === "aria-labelledby" || label[1] === "aria-label" || label[1] === "label") return label;
    if (text && (NAME_FROM_CONTENT.has(role) || (tag !== "SELECT" && tag !== "TEXTAREA" && !el.isContentEditable))) {
      return [text, "content"];
    }
    if (!text && (tag === "A" || tag === "BUTTON" || role === "button" || role === "link")) {
      const img = el.querySelector("img[alt]");
      if (img && img.alt.trim()) return [img.alt, "alt"];
    }
    if (label[0]) return label;
    if (placeholder) return [placeholder, "placeholder"];
    if (context) return [context, "inferred"];
    const byName = wordy(el.getAttribute("name"));
    if (byName) return [byName, "name"];
    const byId = wordy(el.id);
    if (byId) return [byId, "id"];
    return ["", ""];
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
      if (seen >= maxNodes) { capped.nodes = maxNodes; return; }
      if (out.length >= maxElements) { capped.elements = maxElements; return; }
      seen++;
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
      const role = el.getAttribute("role") || implicitRole(el, tag) || (pointer ? "clickable" : "");
      const placeholder = el.getAttribute("placeholder") || el.getAttribute("aria-placeholder") || "";
      const label = labelOf(el, doc);
      const context = clip(contextOf(el, checkable || role === "checkbox" || role === "radio", scope), 80);
      const name = nameOf(el, tag, role, clip(text, 200), label, placeholder, context);
      const field = tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT";
      const maxLength = field && el.maxLength !== undefined ? el.maxLength : -1;
      out.push([
        id, tag.toLowerCase(), role,
        clip(text, 200), clip(label[0], 200), placeholder, value,
        x, y, r.width, r.height,
        el.disabled || el.getAttribute("aria-disabled") === "true" ? 0 : 1,
        visible, el === active ? 1 : 0,
        (checkable && el.checked) || ariaChecked === "true" ? 1 : 0,
        clip(name[0], 200), name[1], context, type,
        (field && el.required) || el.getAttribute("aria-required") === "true" ? 1 : 0,
        (field && el.readOnly) || el.getAttribute("aria-readonly") === "true" ? 1 : 0,
        field ? el.getAttribute("min") || "" : "", field ? el.getAttribute("max") || "" : "",
        maxLength >= 0 ? Math.min(maxLength, 2147483646) : -1,
      ]);
    }
    // Shadow roots are not part of the host's innerText.
    if (args.text && root.nodeType === 11) {
      for (const c of root.children) if (c.innerText) texts.push(c.innerText);
    }
  };


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
  let text = args.text ? [rootText, ...texts].filter((t) => t && t.trim()).join("\n") : "";
  if (text.length > maxTextChars) {
    text = text.slice(0, maxTextChars);
    capped.text_chars = maxTextChars;
  }
  return { elements: out, text, next: st.next, url: location.href, capped };
}
