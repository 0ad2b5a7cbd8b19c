// Guix's /etc/guix/machines.scm: a Scheme file whose value is a list of build-machine records.
// It is read as data and never run: literal fields (and names bound to literals by top-level
// `define`s) are imported; anything computed is reported at its line:col and left as a TODO.
import type { SourceLocation } from "../../errors.js";
import { importError, keepAsComment, newMachine, setField, type Field, type ImportedMachine, type Warn } from "./model.js";
import { readSexps, sourceOf, type Datum } from "./sexp.js";

type Value = string | number | boolean | Value[];

/** How each build-machine field maps to machines.ts (the record of guix/scripts/offload.scm). */
const FIELDS: Record<string, { field: Field; type: "string" | "number" | "strings" | "threshold" } | { note: string }> = {
  name: { field: "name", type: "string" },
  port: { field: "port", type: "number" },
  systems: { field: "systems", type: "strings" },
  system: { field: "systems", type: "string" },
  "host-key": { field: "hostKey", type: "string" },
  user: { field: "user", type: "string" },
  "private-key": { field: "privateKey", type: "string" },
  "parallel-builds": { field: "parallelBuilds", type: "number" },
  speed: { field: "speed", type: "number" },
  features: { field: "features", type: "strings" },
  "overload-threshold": { field: "overloadThreshold", type: "threshold" },
  compression: { note: "offload does not compress SSH (set Compression in root's ssh_config if wanted)" },
  "compression-level": { note: "offload does not compress SSH" },
  "daemon-socket": { field: "remoteStore", type: "string" },
};

/** Top-level forms that configure the module system, not machines. */
const IGNORED_FORMS = new Set(["use-modules", "use-service-modules", "use-package-modules", "define-module"]);

export function importGuixMachines(text: string, file: string, warn: Warn): ImportedMachine[] {
  const forms = readSexps(text, file);
  const defines = new Map<string, Datum>();
  let value: Datum | undefined;
  for (const form of forms) {
    const head = headOf(form);
    if (head === "define" && form.kind === "list" && form.items[1]?.kind === "symbol" && form.items.length === 3) {
      defines.set(form.items[1].name, form.items[2]!);
    } else if (head !== "define" && !IGNORED_FORMS.has(head ?? "")) {
      value = form;
    }
  }
  if (!value) throw importError({ file, line: 1, column: 1 }, "no list of build machines found: machines.scm must end with (list (build-machine …) …)");
  return new GuixReader(text, file, defines, warn).machineList(value, []);
}

function headOf(datum: Datum): string | undefined {
  return datum.kind === "list" && datum.items[0]?.kind === "symbol" ? datum.items[0].name : undefined;
}

class GuixReader {
  constructor(
    private readonly text: string,
    private readonly file: string,
    private readonly defines: Map<string, Datum>,
    private readonly warn: Warn,
  ) {}

  private at(datum: Datum): SourceLocation {
    return { file: this.file, line: datum.start.line, column: datum.start.column };
  }

  private where(datum: Datum): string {
    return `${datum.start.line}:${datum.start.column}`;
  }

  private source(datum: Datum): string {
    return sourceOf(this.text, datum);
  }

  /** A top-level define's value, unless the name is being resolved already (a loop). */
  private resolve(datum: Datum & { kind: "symbol" }, resolving: string[]): Datum | undefined {
    return resolving.includes(datum.name) ? undefined : this.defines.get(datum.name);
  }

  /** The machines an expression evaluates to: list, cons, cons*, append, quasiquote and named lists are followed. */
  machineList(datum: Datum, resolving: string[]): ImportedMachine[] {
    if (datum.kind === "symbol") {
      const bound = this.resolve(datum, resolving);
      return bound ? this.machineList(bound, [...resolving, datum.name]) : [this.computed(datum, "this list of machines")];
    }
    const head = headOf(datum);
    const args = datum.kind === "list" ? datum.items.slice(1) : [];
    switch (head) {
      case "list":
        return args.flatMap((arg) => this.machine(arg, resolving));
      case "append":
        return args.flatMap((arg) => this.machineList(arg, resolving));
      case "cons":
      case "cons*":
        if (args.length === 0) break;
        return [...args.slice(0, -1).flatMap((arg) => this.machine(arg, resolving)), ...this.machineList(args.at(-1)!, resolving)];
      case "quote":
        if (args[0]?.kind === "list" && args[0].items.length === 0) return [];
        throw importError(
          this.at(datum),
          `${this.source(datum)} is quoted data, not build-machine records (quote keeps (build-machine …) from being evaluated)`,
        );
      case "quasiquote":
        if (args[0]?.kind !== "list") break;
        return args[0].items.flatMap((item) => {
          if (headOf(item) === "unquote" && item.kind === "list") return this.machine(item.items[1]!, resolving);
          if (headOf(item) === "unquote-splicing" && item.kind === "list") return this.machineList(item.items[1]!, resolving);
          throw importError(this.at(item), `${this.source(item)} is quoted data inside a quasiquoted list of machines; unquote it: ,(build-machine …)`);
        });
    }
    return [this.computed(datum, "this list of machines")];
  }

  private machine(datum: Datum, resolving: string[]): ImportedMachine[] {
    if (datum.kind === "symbol") {
      const bound = this.resolve(datum, resolving);
      return bound ? this.machine(bound, [...resolving, datum.name]) : [this.computed(datum, "this machine")];
    }
    return headOf(datum) === "build-machine" ? [this.record(datum as Datum & { kind: "list" })] : [this.computed(datum, "this machine")];
  }

  /** A placeholder for what only running Scheme could tell: reported, written as a TODO, never guessed. */
  private computed(datum: Datum, what: string): ImportedMachine {
    const machine = newMachine(this.at(datum), this.source(datum));
    machine.incomplete = true;
    keepAsComment(
      machine,
      this.at(datum),
      `TODO ${this.where(datum)}: ${what} is computed by Scheme code, which offload import does not run; write its records by hand`,
      this.warn,
    );
    return machine;
  }

  private record(datum: Datum & { kind: "list" }): ImportedMachine {
    const machine = newMachine(this.at(datum), this.source(datum));
    // A Guix build machine builds with guix-daemon: offload serves it as guix-daemon's hook.
    setField(machine, "daemon", "guix", machine.at, this.warn);
    const systems: string[] = [];
    const given = new Set<Field>();
    for (const clause of datum.items.slice(1)) {
      const name = headOf(clause);
      if (name === undefined || clause.kind !== "list" || clause.items.length !== 2) {
        throw importError(this.at(clause), `${this.source(clause)} is not a field of build-machine: write (field value)`);
      }
      const mapping = FIELDS[name];
      const valueDatum = clause.items[1]!;
      if (!mapping) {
        keepAsComment(machine, this.at(clause), `${this.source(clause)}: build-machine field offload does not know; not imported`, this.warn);
        continue;
      }
      if ("note" in mapping) {
        machine.notes.push(`${this.source(clause)}: ${mapping.note}`);
        continue;
      }
      given.add(mapping.field);
      const value = this.literal(valueDatum, []);
      if (value === undefined) {
        keepAsComment(
          machine,
          this.at(valueDatum),
          `TODO ${this.where(valueDatum)}: ${name} is computed by ${this.source(valueDatum)}, which offload import does not run; write its value here`,
          this.warn,
        );
        if (mapping.field === "name" || mapping.field === "systems") machine.incomplete = true;
        continue;
      }
      const typed = this.typed(value, mapping.type, name, valueDatum);
      if (mapping.field === "systems") systems.push(...(typed as string[]));
      else setField(machine, mapping.field, typed, this.at(valueDatum), this.warn);
    }
    if (systems.length > 0) setField(machine, "systems", [...new Set(systems)], machine.at, this.warn);
    const missing = (["name", "systems"] as const).filter((field) => !given.has(field));
    if (missing.length > 0) throw importError(machine.at, `build-machine has no ${missing.join(" and no ")} field`);
    return machine;
  }

  /** The value of a literal expression, or undefined when it takes running code to know. */
  private literal(datum: Datum, resolving: string[]): Value | undefined {
    switch (datum.kind) {
      case "string":
      case "number":
      case "boolean":
        return datum.value;
      case "symbol": {
        const bound = this.resolve(datum, resolving);
        return bound ? this.literal(bound, [...resolving, datum.name]) : undefined;
      }
      case "list": {
        const head = headOf(datum);
        const args = datum.items.slice(1);
        if (head === "list") return this.all(args.map((arg) => this.literal(arg, resolving)));
        if ((head === "quote" || head === "quasiquote") && args.length === 1) return this.quoted(args[0]!, head === "quasiquote", resolving);
        return undefined;
      }
      default:
        return undefined;
    }
  }

  /** Quoted data: strings, numbers, booleans and lists of them; under quasiquote, unquoted parts are literals again. */
  private quoted(datum: Datum, quasi: boolean, resolving: string[]): Value | undefined {
    if (quasi && headOf(datum) === "unquote" && datum.kind === "list") return this.literal(datum.items[1]!, resolving);
    switch (datum.kind) {
      case "string":
      case "number":
      case "boolean":
        return datum.value;
      case "list":
        return datum.tail ? undefined : this.all(datum.items.map((item) => this.quoted(item, quasi, resolving)));
      default:
        return undefined;
    }
  }

  private all(values: (Value | undefined)[]): Value[] | undefined {
    return values.every((value) => value !== undefined) ? (values as Value[]) : undefined;
  }

  private typed(value: Value, type: "string" | "number" | "strings" | "threshold", name: string, datum: Datum): unknown {
    const fail = (what: string) => importError(this.at(datum), `(${name} ${this.source(datum)}): ${name} must be ${what}`);
    switch (type) {
      case "string":
        if (typeof value !== "string") throw fail("a string");
        return name === "system" ? [value] : value;
      case "number":
        if (typeof value !== "number") throw fail("a number");
        return value;
      case "strings":
        if (!Array.isArray(value) || value.some((item) => typeof item !== "string")) throw fail("a list of strings");
        return value;
      case "threshold":
        // #f turns the load check off, like offload's null.
        if (value === false) return null;
        if (typeof value !== "number") throw fail("a number or #f");
        return value;
    }
  }
}
