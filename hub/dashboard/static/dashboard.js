// The dashboard works without this file; it only saves a click: a new month reloads the page.
document.addEventListener("DOMContentLoaded", function () {
  var picker = document.querySelector("form.period input[type=month]");
  if (picker) {
    picker.addEventListener("change", function () {
      if (/^\d{4}-\d{2}$/.test(picker.value)) picker.form.submit();
    });
  }
});
