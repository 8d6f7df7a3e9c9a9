// Muster console: progressive enhancement only. Every page works without
// this file; with it, copy buttons copy, live areas refresh themselves, the
// decommission button waits for the typed hostname, and a chosen CSV file is
// read into the upload form.
"use strict";

function copyButtons() {
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) return;
      var text = source.textContent;
      var done = function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
      } else {
        selectText(source);
      }
    });
  });
}

function selectText(element) {
  var range = document.createRange();
  range.selectNodeContents(element);
  var selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

function livePolls() {
  document.querySelectorAll("[data-poll]").forEach(function (area) {
    var url = area.getAttribute("data-poll");
    var tick = function () {
      fetch(url, { headers: { "x-muster-fragment": "1" }, credentials: "same-origin" })
        .then(function (resp) {
          if (!resp.ok) throw new Error("HTTP " + resp.status);
          return resp.text();
        })
        .then(function (html) {
          area.innerHTML = html;
          if (!area.querySelector("[data-settled]")) setTimeout(tick, 2000);
        })
        .catch(function () { setTimeout(tick, 5000); });
    };
    tick();
  });
}

function confirmByTyping() {
  document.querySelectorAll("[data-confirm-for]").forEach(function (input) {
    var button = document.getElementById(input.getAttribute("data-confirm-for"));
    if (!button) return;
    var expect = input.getAttribute("data-expect");
    var update = function () { button.disabled = input.value.trim() !== expect; };
    input.addEventListener("input", update);
    update();
  });
}

function fileIntoTextarea() {
  document.querySelectorAll("[data-file-into]").forEach(function (input) {
    input.addEventListener("change", function () {
      var file = input.files && input.files[0];
      if (!file) return;
      var target = document.getElementById(input.getAttribute("data-file-into"));
      var name = document.getElementById(input.getAttribute("data-name-into"));
      file.text().then(function (text) {
        target.value = text;
        if (name && !name.value) name.value = file.name;
      });
    });
  });
}

document.addEventListener("DOMContentLoaded", function () {
  copyButtons();
  livePolls();
  confirmByTyping();
  fileIntoTextarea();
});
