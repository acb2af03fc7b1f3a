// The compose page works without this file (its 预览 button renders the preview on the server);
// this only fills the preview as one types, from the same route, and keeps a second click of
// 发送 from posting again (the form's token makes a repeat send nothing anyway).
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("compose-form");
  if (!form || !window.fetch || !window.URLSearchParams) return;
  var timer = null;
  var asked = 0;
  function refresh() {
    var mine = ++asked;
    fetch("/dashboard/compose/preview", {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-Fragment": "1", "Content-Type": "application/x-www-form-urlencoded" },
      body: fields()
    }).then(function (resp) {
      return resp.ok ? resp.text() : null;
    }).then(function (html) {
      if (html === null || mine !== asked) return;
      var region = document.getElementById("preview");
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var fresh = holder.querySelector("#preview");
      if (region && fresh) region.replaceWith(fresh);
    }).catch(function () { /* the 预览 button still works */ });
  }
  function fields() {  // the form as text, without the roster file
    var pairs = new URLSearchParams();
    new FormData(form).forEach(function (value, name) {
      if (typeof value === "string") pairs.append(name, value);
    });
    return pairs.toString();
  }
  function soon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 400);
  }
  form.addEventListener("input", soon);
  form.addEventListener("change", soon);
  form.addEventListener("submit", function (event) {
    var button = event.submitter;
    if (button && button.id === "roster-button") return;
    if (button && button.id === "preview-button") {
      event.preventDefault();
      refresh();
      return;
    }
    if (form.dataset.sent) {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "1";
  });
});
