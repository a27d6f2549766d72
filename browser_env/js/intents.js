// Runs in every frame before the page's own scripts (context.add_init_script).
// Notes, in the page itself and at the moment it happens, that the page asked
// for a new window (window.open, a link or form with a target) or started a
// navigation of the top document (Navigation API "navigate" event). The env
// reads and clears the notes after each action, in the observer's own call
// (BrowserEnv._follow), and waits, within a bound, for what was asked for: the
// browser reports new pages and navigations asynchronously, and under load
// they would otherwise arrive after the observation was taken.
(() => {
  if (window.__brlIntents || window.top !== window) return;
  // planned: a form submission's navigation, { url, event } (event: null for
  // form.submit()); it counts at the read unless a later listener prevented it.
  const notes = { popups: 0, navigate: null, planned: null };
  Object.defineProperty(window, "__brlIntents", {
    value: () => {
      const planned = notes.planned && !notes.planned.event?.defaultPrevented
        ? notes.planned.url : null;
      const out = { popups: notes.popups, navigate: notes.navigate ?? planned };
      notes.popups = 0; notes.navigate = null; notes.planned = null;
      return out;
    },
    enumerable: false,
  });
  const open = window.open;
  const wrapped = function (...args) {
    const win = open.apply(this, args);
    if (win) notes.popups += 1;
    return win;
  };
  Object.defineProperty(wrapped, "toString", { value: () => open.toString(), enumerable: false });
  window.open = wrapped;
  const opensWindow = (target) => {
    const t = (target || document.querySelector("base[target]")?.target || "").toLowerCase();
    return t !== "" && t !== "_self" && t !== "_parent" && t !== "_top" && !window.frames[t];
  };
  // Bubbling listeners on window run after the page's own handlers, so a
  // handler's preventDefault() is already visible here.
  window.addEventListener("click", (e) => {
    if (e.defaultPrevented || !(e.target instanceof Element)) return;
    const link = e.target.closest("a[href], area[href]");
    if (link && !link.hasAttribute("download") && opensWindow(link.getAttribute("target"))
        && /^https?:|^\/|^\.|^[^:]*$/i.test(link.getAttribute("href"))) notes.popups += 1;
  });
  // A form's submission plans its navigation: the "navigate" event below fires
  // in a later task (~10-15 ms here), after the env's read that follows the
  // action, so the submission notes the navigation itself: the submit event,
  // and form.submit() (which fires none). Not for a dialog form, a javascript:
  // action or a target frame, which navigate no top document. Attributes are
  // read through Element's own getAttribute: a field named "action" or
  // "getAttribute" shadows the form's properties of those names.
  const attr = (el, name) => (el ? Element.prototype.getAttribute.call(el, name) : null);
  const noteSubmission = (form, submitter, event) => {
    const target = attr(submitter, "formtarget") ?? attr(form, "target");
    if (opensWindow(target)) { notes.popups += 1; return; }
    const t = (target || document.querySelector("base[target]")?.target || "").toLowerCase();
    const method = attr(submitter, "formmethod") ?? attr(form, "method") ?? "";
    const raw = attr(submitter, "formaction") || attr(form, "action");
    let url = location.href;
    try { if (raw) url = new URL(raw, document.baseURI).href; } catch { return; }
    if ((t === "" || t === "_self" || t === "_top" || t === "_parent")
        && method.toLowerCase() !== "dialog" && !/^javascript:/i.test(url)) {
      notes.planned = { url, event };
    }
  };
  window.addEventListener("submit", (e) => {
    if (!e.defaultPrevented && e.target instanceof HTMLFormElement) {
      noteSubmission(e.target, e.submitter, e);
    }
  });
  const submit = HTMLFormElement.prototype.submit;
  const submitWrapped = function (...args) {
    if (this instanceof HTMLFormElement && this.isConnected) noteSubmission(this, null, null);
    return submit.apply(this, args);
  };
  Object.defineProperty(submitWrapped, "toString", {
    value: () => submit.toString(), enumerable: false,
  });
  Object.defineProperty(HTMLFormElement.prototype, "submit", {
    value: submitWrapped, writable: true, configurable: true, enumerable: false,
  });
  if (window.navigation) {
    window.navigation.addEventListener("navigate", (e) => {
      if (!e.hashChange && !e.downloadRequest && e.navigationType !== "reload") {
        notes.navigate = e.destination.url;
      }
    });
  }
})();
