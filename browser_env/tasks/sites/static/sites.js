// A small date picker for <input data-datepicker> (bundled sites). The input is
// read-only: a date is chosen by opening the calendar (click the input or the
// button named in data-button), moving between months and clicking a day.
(() => {
  const MONTHS = ["January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December"];
  const iso = (y, m, d) => `${y}-${String(m + 1).padStart(2, "0")}-${String(d).padStart(2, "0")}`;
  for (const input of document.querySelectorAll("input[data-datepicker]")) {
    const box = document.createElement("div");
    box.className = "calendar";
    box.hidden = true;
    input.after(box);
    const [ty, tm] = input.dataset.today.split("-").map(Number);
    let year = ty, month = tm - 1;
    const button = (text, onClick, disabled = false) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = text;
      b.disabled = disabled;
      b.addEventListener("click", onClick);
      return b;
    };
    const render = () => {
      box.replaceChildren();
      const head = document.createElement("div");
      head.append(
        button("Previous month", () => { month -= 1; if (month < 0) { month = 11; year -= 1; } render(); }),
        ` Calendar: ${MONTHS[month]} ${year} `,
        button("Next month", () => { month += 1; if (month > 11) { month = 0; year += 1; } render(); }),
      );
      box.append(head);
      const days = new Date(Date.UTC(year, month + 1, 0)).getUTCDate();
      const grid = document.createElement("div");
      for (let d = 1; d <= days; d++) {
        const value = iso(year, month, d);
        const out = value < input.dataset.min || value > input.dataset.max;
        const b = button(String(d), () => { input.value = value; box.hidden = true; }, out);
        b.className = "day";
        grid.append(b);
      }
      box.append(grid);
    };
    const open = () => { render(); box.hidden = false; };
    input.addEventListener("click", open);
    const opener = document.getElementById(input.dataset.button || "");
    if (opener) opener.addEventListener("click", open);
  }
})();
