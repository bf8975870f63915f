// forms: a form generated from a workflow's `inputs` — a select for an
// enum or a boolean, a number field for integers and numbers, a text area
// for lists and objects (JSON), a text field with the pattern otherwise;
// required, defaults and descriptions as declared. Checked in the browser
// first, then by the server, whose per-field answer (`error.fields`,
// `inputs.NAME`) is shown at its field.

// Fills `box` with fields for `specs` (name -> spec), prefilled from
// `given` or the defaults. Returns {values(), serverErrors(fields)}:
// values() is the typed inputs, or null after marking what is wrong.
function inputsForm(box, specs, given, prefix) {
  const rows = [];
  box.replaceChildren();
  const names = Object.keys(specs);
  if (!names.length) box.append(el("p", { class: "muted" }, "This workflow takes no inputs."));
  for (const name of names) {
    const spec = specs[name] || {};
    const type = spec.type || "string";
    const id = prefix + "input-" + name.replace(/[^A-Za-z0-9_-]/g, "_");
    const start = given && name in given ? given[name] : spec.default;
    let field;
    if (spec.enum || type === "boolean") {
      const options = spec.enum || [true, false];
      field = el("select", { id, name },
        spec.required && start === undefined ? el("option", { value: "" }, "(choose)") : null,
        !spec.required ? el("option", { value: "" }, "(not set)") : null,
        ...options.map((o) => el("option", { value: JSON.stringify(o) }, typeof o === "string" ? o : JSON.stringify(o))));
      if (start !== undefined) field.value = JSON.stringify(start);
    } else if (type === "list" || type === "object") {
      field = el("textarea", { id, name, rows: "3", spellcheck: "false" });
      if (start !== undefined) field.value = JSON.stringify(start);
    } else {
      field = el("input", { id, name, type: type === "integer" || type === "number" ? "number" : "text",
        step: type === "integer" ? "1" : type === "number" ? "any" : null, autocomplete: "off", spellcheck: "false" });
      if (start !== undefined) field.value = typeof start === "string" ? start : String(start);
    }
    if (spec.required) field.setAttribute("aria-required", "true");
    const error = el("span", { class: "field-error", id: id + "-error", "aria-live": "polite" });
    field.setAttribute("aria-describedby", id + "-error" + (spec.description ? " " + id + "-help" : ""));
    const hint = [type, spec.required ? "required" : "optional", spec.pattern ? "pattern " + spec.pattern : null].filter(Boolean).join(", ");
    box.append(el("div", { class: "field" },
      el("label", { for: id }, name, el("span", { class: "muted" }, " (" + hint + ")")),
      spec.description ? el("span", { class: "muted help", id: id + "-help" }, spec.description) : null,
      field, error));
    rows.push({ name, spec, type, field, error });
  }

  const check = (row) => {
    const text = row.field.value;
    const { spec, type } = row;
    if (text.trim() === "") return spec.required && spec.default === undefined ? { bad: "required" } : { skip: true };
    if (spec.enum || type === "boolean") return { value: JSON.parse(text) };
    if (type === "integer") return /^-?\d+$/.test(text.trim()) ? { value: Number(text) } : { bad: "not an integer" };
    if (type === "number") return Number.isFinite(Number(text)) ? { value: Number(text) } : { bad: "not a number" };
    if (type === "list" || type === "object") {
      try {
        const v = JSON.parse(text);
        if (type === "list" ? !Array.isArray(v) : (v === null || typeof v !== "object" || Array.isArray(v))) return { bad: "not a JSON " + (type === "list" ? "list" : "object") };
        return { value: v };
      } catch (e) { return { bad: "not JSON" }; }
    }
    if (spec.pattern) {
      let re = null;
      try { re = new RegExp(spec.pattern, "u"); } catch (e) { /* a Rust-only regex: the server checks it */ }
      if (re && !re.test(text)) return { bad: "does not match " + spec.pattern };
    }
    return { value: text };
  };

  const mark = (row, message) => {
    setText(row.error, message || "");
    if (message) row.field.setAttribute("aria-invalid", "true"); else row.field.removeAttribute("aria-invalid");
  };

  return {
    values() {
      const out = {};
      let ok = true;
      let first = null;
      for (const row of rows) {
        const r = check(row);
        mark(row, r.bad ? row.name + ": " + r.bad : "");
        if (r.bad) { ok = false; first = first || row.field; } else if (!r.skip) out[row.name] = r.value;
      }
      if (!ok && first) first.focus();
      return ok ? out : null;
    },
    serverErrors(fields) {
      let first = null;
      for (const row of rows) {
        const message = (fields || {})["inputs." + row.name];
        mark(row, message || "");
        if (message && !first) first = row.field;
      }
      if (first) first.focus();
    },
  };
}
