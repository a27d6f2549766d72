// Runs in every frame before the page's own scripts (context.add_init_script).
// Remembers which nodes got pointer listeners, so the observer can list
// elements that are clickable only through JS (jQuery/d3 handlers, React...).
// The marks live in a WeakSet behind a non-enumerable property: pages cannot
// enumerate it and it never keeps a node alive.
(() => {
  if (window.__brlListeners) return;
  const marked = new WeakSet();
  Object.defineProperty(window, "__brlListeners", { value: marked, enumerable: false });
  const POINTER = new Set(["click", "mousedown", "mouseup", "dblclick", "pointerdown", "pointerup", "touchstart"]);
  const original = EventTarget.prototype.addEventListener;
  const patched = function (type, listener, options) {
    if (POINTER.has(type) && this && this.nodeType === 1) marked.add(this);
    return original.call(this, type, listener, options);
  };
  Object.defineProperty(patched, "toString", { value: () => original.toString(), enumerable: false });
  EventTarget.prototype.addEventListener = patched;
})();
