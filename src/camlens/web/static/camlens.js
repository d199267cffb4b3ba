// camlens web app: opacity sliders over the photo, and a busy note while a form is sent.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const slider of document.querySelectorAll("input[data-overlay]")) {
    const target = document.getElementById(slider.dataset.overlay);
    const shown = slider.parentElement.querySelector("output");
    const apply = () => {
      if (target) target.style.opacity = String(slider.value / 100);
      if (shown) shown.textContent = slider.value + "%";
    };
    slider.addEventListener("input", apply);
    apply();
  }
  for (const form of document.querySelectorAll("form[data-busy]")) {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      const note = form.querySelector(".busy");
      if (button) button.disabled = true;
      if (note) note.textContent = form.dataset.busy;
    });
  }
});
// back to a page kept in the browser's cache: the form may be sent again
window.addEventListener("pageshow", () => {
  for (const button of document.querySelectorAll("form[data-busy] button[type=submit]")) {
    button.disabled = false;
  }
  for (const note of document.querySelectorAll("form[data-busy] .busy")) note.textContent = "";
});
