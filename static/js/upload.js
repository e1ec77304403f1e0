// Dataset upload: drag and drop, a real progress bar (XMLHttpRequest upload events), the
// column-mapping editor, and a refused file's line errors. User text only ever goes through
// textContent. Without JavaScript the form still posts to /datasets.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const fileInput = document.getElementById("upload-file");
  const dropzone = document.getElementById("dropzone");
  const chosen = document.getElementById("chosen-file");
  const status = document.getElementById("upload-status");
  const progress = document.getElementById("upload-progress");
  const percent = document.getElementById("upload-percent");
  const phase = document.getElementById("upload-phase");
  const result = document.getElementById("upload-result");
  const button = document.getElementById("upload-button");
  const mappingJson = document.getElementById("mapping-json");
  const formatting = document.getElementById("mapping-formatting");
  const ranking = document.getElementById("mapping-ranking");
  const columns = Array.from(document.querySelectorAll(".mapping-column"));
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const OPTIONAL = ["name", "kind", "format", "encoding", "mapping"];

  function sizeText(bytes) {
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (bytes >= 1024 && i < units.length - 1) { bytes /= 1024; i += 1; }
    return (i ? bytes.toFixed(1) : String(bytes)) + " " + units[i];
  }

  function showChosen() {
    const file = fileInput.files[0];
    chosen.textContent = file ? file.name + " (" + sizeText(file.size) + ")" : "";
  }

  // -- drag and drop ---------------------------------------------------------------------
  ["dragenter", "dragover"].forEach(function (name) {
    dropzone.addEventListener(name, function (event) {
      event.preventDefault();
      dropzone.classList.add("dragging");
    });
  });
  ["dragleave", "drop"].forEach(function (name) {
    dropzone.addEventListener(name, function () { dropzone.classList.remove("dragging"); });
  });
  dropzone.addEventListener("drop", function (event) {
    event.preventDefault();
    if (event.dataTransfer && event.dataTransfer.files.length) {
      fileInput.files = event.dataTransfer.files;
      showChosen();
    }
  });
  fileInput.addEventListener("change", showChosen);

  // -- mapping editor: the table writes the JSON; the JSON may also be edited by hand ---------
  function mappingFromTable() {
    const cols = {};
    columns.forEach(function (input) {
      if (input.value.trim()) cols[input.dataset.field] = input.value.trim();
    });
    const mapping = {};
    if (formatting.value) mapping.formatting = formatting.value;
    if (ranking.checked) mapping.ranking = true;
    if (Object.keys(cols).length) mapping.columns = cols;
    mappingJson.value = Object.keys(mapping).length ? JSON.stringify(mapping, null, 2) : "";
  }
  function tableFromMapping() {
    let mapping;
    try { mapping = JSON.parse(mappingJson.value); } catch (e) { return; }
    if (!mapping || typeof mapping !== "object") return;
    formatting.value = mapping.formatting === "alpaca" || mapping.formatting === "sharegpt" ? mapping.formatting : "";
    ranking.checked = mapping.ranking === true;
    const cols = mapping.columns || {};
    columns.forEach(function (input) {
      input.value = typeof cols[input.dataset.field] === "string" ? cols[input.dataset.field] : "";
    });
  }
  columns.forEach(function (input) { input.addEventListener("input", mappingFromTable); });
  formatting.addEventListener("change", mappingFromTable);
  ranking.addEventListener("change", mappingFromTable);
  mappingJson.addEventListener("change", tableFromMapping);
  if (mappingJson.value.trim()) tableFromMapping();

  // -- results ---------------------------------------------------------------------------
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function detailText(detail) {
    if (Array.isArray(detail)) {
      return detail.map(function (d) { return (d.loc ? d.loc.join(".") + ": " : "") + d.msg; }).join("; ");
    }
    return detail ? String(detail) : "the upload was refused";
  }

  function showRefusal(body) {
    const box = el("div", "refused");
    box.setAttribute("role", "alert");
    box.appendChild(el("p", "error", detailText(body.detail)));
    const errors = Array.isArray(body.errors) ? body.errors : [];
    if (errors.length) {
      const table = el("table", "errors");
      const head = table.createTHead().insertRow();
      ["Line", "Problem"].forEach(function (t) { head.appendChild(el("th", "", t)); });
      const tbody = table.createTBody();
      errors.forEach(function (e) {
        const row = tbody.insertRow();
        row.appendChild(el("td", "", e.line === undefined || e.line === null ? "" : String(e.line)));
        const problem = el("td", "");
        if (e.field) { problem.appendChild(el("code", "field", String(e.field))); problem.appendChild(document.createTextNode(": ")); }
        problem.appendChild(document.createTextNode(String(e.message || "")));
        row.appendChild(problem);
      });
      box.appendChild(table);
    }
    result.replaceChildren(box);
  }

  // Rows were skipped (skip_invalid): say which and why before leaving the page.
  function showSkipped(body) {
    showRefusal({ detail: body.skipped + " invalid row(s) were skipped", errors: body.skipped_errors });
    const box = result.querySelector(".refused");
    box.classList.add("skipped");
    box.setAttribute("role", "status");
    const open = el("a", "button", "Open the dataset (" + body.num_rows + " rows)");
    open.href = "/datasets/" + encodeURIComponent(body.id);
    open.id = "open-dataset";
    box.appendChild(el("p")).appendChild(open);
  }

  // The dataset page, once the new dataset can be read (its transaction may still be ending).
  function openWhenReady(id, attempt) {
    const url = "/datasets/" + encodeURIComponent(id);
    fetch("/api/datasets/" + encodeURIComponent(id), { headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.ok || attempt >= 20) { window.location.assign(url); return; }
        setTimeout(function () { openWhenReady(id, attempt + 1); }, 150);
      })
      .catch(function () { window.location.assign(url); });
  }

  function setProgress(value, text) {
    progress.value = value;
    percent.textContent = Math.round(value) + "%";
    if (text !== undefined) phase.textContent = text;
  }

  // -- upload ----------------------------------------------------------------------------
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!fileInput.files.length) { fileInput.reportValidity(); return; }
    if (mappingJson.value.trim()) {
      try { JSON.parse(mappingJson.value); } catch (e) {
        showRefusal({ detail: "the column mapping is not valid JSON: " + e.message });
        return;
      }
    }
    const data = new FormData(form);
    data.delete("csrf_token");
    OPTIONAL.forEach(function (key) { if (!String(data.get(key) || "").trim()) data.delete(key); });

    result.replaceChildren();
    status.hidden = false;
    button.disabled = true;
    setProgress(0, "uploading " + fileInput.files[0].name);

    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.api);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) setProgress((100 * e.loaded) / e.total);
    });
    xhr.upload.addEventListener("load", function () { setProgress(100, "checking every row…"); });
    xhr.addEventListener("load", function () {
      button.disabled = false;
      const body = xhr.response || {};
      if (xhr.status === 201 && body.id) {
        setProgress(100, "imported " + body.num_rows + " rows");
        if (body.skipped) { showSkipped(body); return; }
        openWhenReady(body.id, 0);
        return;
      }
      phase.textContent = "refused";
      showRefusal(body);
    });
    xhr.addEventListener("error", function () {
      button.disabled = false;
      phase.textContent = "";
      showRefusal({ detail: "the upload failed: the server could not be reached" });
    });
    xhr.send(data);
  });
})();
