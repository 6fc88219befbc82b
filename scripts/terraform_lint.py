#!/usr/bin/env python3
"""Static checks of terraform/ that need no provider and no network.

Parses every .tf file with python-hcl2 and asserts:
  * every file parses;
  * every module has versions.tf, variables.tf, main.tf and outputs.tf, pins
    required_version and every required provider (source + a "~>"/"=" version
    constraint), and configures no provider (only envs do);
  * every variable (modules and envs) has a type and a description, and a
    validation block unless it is a bool;
  * every output has a description; an output whose value touches a password,
    a random secret or a secret string is marked sensitive;
  * every env wires every required variable (no default) of every local module
    it calls, and passes no argument the module does not declare;
  * every var.NAME referenced in a directory is declared there;
  * no 12-digit account id and no literal password/secret value appears;
  * every inline checkov skip names a check and gives a reason (>= 20 chars).

Usage: terraform_lint.py [TERRAFORM_DIR]   (default: terraform/ beside scripts/)
Exit 0 when clean, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

try:
    import hcl2  # python-hcl2
except ImportError:  # pragma: no cover
    sys.exit("terraform_lint: python-hcl2 is not installed (scripts/terraform-check.sh installs it)")

META_ARGS = {"source", "version", "count", "for_each", "depends_on", "providers"}
MODULE_FILES = ("versions.tf", "variables.tf", "main.tf", "outputs.tf")
SECRETISH = re.compile(r"random_password\.|random_id\.|secret_string|\.password\b|master_user_secret")
SKIP_RE = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::(.*))?")


def unq(s: object) -> object:
    """python-hcl2 keeps the quotes of labels and string literals."""
    if isinstance(s, str) and len(s) >= 2 and s[0] == '"' and s[-1] == '"':
        return s[1:-1]
    return s


def blocks(doc: dict, kind: str) -> list[tuple[str, dict]]:
    """(label, body) of every `kind "label" { ... }` block in a parsed file."""
    out = []
    for entry in doc.get(kind, []):
        for label, body in entry.items():
            out.append((str(unq(label)), body))
    return out


class Lint:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []
        self.parsed: dict[Path, dict] = {}
        self.stats = {"files": 0, "modules": 0, "envs": 0, "variables": 0, "outputs": 0, "skips": 0}

    def problem(self, where: Path | str, msg: str) -> None:
        rel = where.relative_to(self.root.parent) if isinstance(where, Path) else where
        self.problems.append(f"{rel}: {msg}")

    # ---- parsing ---------------------------------------------------------------
    def parse_all(self) -> None:
        for f in sorted(self.root.rglob("*.tf")):
            if ".terraform" in f.parts:
                continue
            self.stats["files"] += 1
            text = f.read_text()
            try:
                self.parsed[f] = hcl2.loads(text)
            except Exception as e:  # noqa: BLE001 - any parse failure is a finding
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                self.problem(f, f"does not parse: {first}")
                continue
            self.scan_text(f, text)

    def dir_docs(self, d: Path) -> list[tuple[Path, dict]]:
        return [(f, doc) for f, doc in self.parsed.items() if f.parent == d]

    # ---- text-level checks -------------------------------------------------------
    def scan_text(self, f: Path, text: str) -> None:
        for n, line in enumerate(text.splitlines(), 1):
            m = SKIP_RE.search(line)
            if m:
                self.stats["skips"] += 1
                reason = (m.group(2) or "").strip()
                if len(reason) < 20:
                    self.problem(f, f"line {n}: checkov skip {m.group(1)} without a real justification")
                continue
            code = line.split("#", 1)[0]
            if re.search(r"(?<![0-9{])[0-9]{12}(?![0-9}])", code):
                self.problem(f, f"line {n}: looks like a hard-coded 12-digit account id")
            if re.search(r'^\s*(password|secret_string|master_password)\s*=\s*"[^"$]', code):
                if "${" not in code:
                    self.problem(f, f"line {n}: literal secret value")

    # ---- variables and outputs ------------------------------------------------
    def variables(self, d: Path) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for _f, doc in self.dir_docs(d):
            for name, body in blocks(doc, "variable"):
                out[name] = body
        return out

    def check_variables(self, d: Path) -> None:
        for name, body in self.variables(d).items():
            self.stats["variables"] += 1
            where = d / "variables.tf"
            desc = unq(body.get("description", ""))
            if not isinstance(desc, str) or len(desc.strip()) < 10:
                self.problem(where, f'variable "{name}" has no description')
            vtype = body.get("type")
            if vtype is None:
                self.problem(where, f'variable "{name}" has no type')
            if vtype != "bool" and not body.get("validation"):
                self.problem(where, f'variable "{name}" has no validation block')

    def check_outputs(self, d: Path) -> None:
        for f, doc in self.dir_docs(d):
            for name, body in blocks(doc, "output"):
                self.stats["outputs"] += 1
                desc = unq(body.get("description", ""))
                if not isinstance(desc, str) or len(desc.strip()) < 10:
                    self.problem(f, f'output "{name}" has no description')
                value = str(body.get("value", ""))
                if SECRETISH.search(value) and body.get("sensitive") is not True:
                    self.problem(f, f'output "{name}" exposes a secret without sensitive = true')

    def check_var_refs(self, d: Path) -> None:
        declared = set(self.variables(d))
        for f in sorted(d.glob("*.tf")):
            for n, line in enumerate(f.read_text().splitlines(), 1):
                for ref in re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_-]*)", line.split("#", 1)[0]):
                    if ref not in declared:
                        self.problem(f, f"line {n}: var.{ref} is not declared in {d.name}/")

    # ---- versions / providers -------------------------------------------------
    def check_versions(self, d: Path, is_module: bool) -> None:
        docs = self.dir_docs(d)
        tf_blocks = [b for _f, doc in docs for b in doc.get("terraform", [])]
        if not any("required_version" in b for b in tf_blocks):
            self.problem(d, "no terraform.required_version")
        providers = {}
        for b in tf_blocks:
            for rp in b.get("required_providers", []):
                for pname, spec in rp.items():
                    if pname == "__is_block__":
                        continue
                    providers[pname] = spec
        if not providers:
            self.problem(d, "no required_providers")
        for pname, spec in providers.items():
            if not isinstance(spec, dict) or "source" not in spec or "version" not in spec:
                self.problem(d, f"provider {pname} needs source and version")
                continue
            version = str(unq(spec["version"]))
            if not re.match(r"^(~>\s*\d+\.\d+(\.\d+)?|=?\s*\d+\.\d+\.\d+)$", version.strip()):
                self.problem(d, f'provider {pname} version "{version}" is not pinned (use ~> X.Y or an exact version)')
        if is_module:
            for f, doc in docs:
                if doc.get("provider"):
                    self.problem(f, "modules must not configure providers (only envs do)")

    # ---- modules and envs -----------------------------------------------------
    def check_module(self, d: Path) -> None:
        self.stats["modules"] += 1
        for required in MODULE_FILES:
            if not (d / required).exists():
                self.problem(d, f"missing {required}")
        self.check_versions(d, is_module=True)
        self.check_variables(d)
        self.check_outputs(d)
        self.check_var_refs(d)

    def check_env(self, d: Path) -> None:
        self.stats["envs"] += 1
        self.check_versions(d, is_module=False)
        self.check_variables(d)
        self.check_outputs(d)
        self.check_var_refs(d)
        calls = [(f, name, body) for f, doc in self.dir_docs(d) for name, body in blocks(doc, "module")]
        if not calls:
            self.problem(d, "env calls no module")
        for f, name, body in calls:
            source = str(unq(body.get("source", "")))
            if not source.startswith("."):
                self.problem(f, f'module "{name}": source {source!r} is not a local module')
                continue
            mdir = (d / source).resolve()
            if not mdir.is_dir():
                self.problem(f, f'module "{name}": {source} does not exist')
                continue
            mvars = self.variables(mdir)
            passed = {k for k in body if k != "__is_block__"} - META_ARGS
            for var, vbody in sorted(mvars.items()):
                if "default" not in vbody and var not in passed:
                    self.problem(f, f'module "{name}" does not set required variable "{var}" of {mdir.name}')
            for arg in sorted(passed - set(mvars)):
                self.problem(f, f'module "{name}" sets "{arg}", which {mdir.name} does not declare')

    def run(self) -> int:
        self.parse_all()
        modules = sorted(p for p in (self.root / "modules").iterdir() if p.is_dir())
        envs = sorted(p for p in (self.root / "envs").iterdir() if p.is_dir())
        if not modules:
            self.problem(self.root, "no modules")
        if not envs:
            self.problem(self.root, "no envs")
        for m in modules:
            self.check_module(m)
        for e in envs:
            self.check_env(e)
        s = self.stats
        summary = (
            f"{s['files']} files, {s['modules']} modules, {s['envs']} envs, {s['variables']} variables, "
            f"{s['outputs']} outputs, {s['skips']} justified checkov skips"
        )
        if self.problems:
            for p in self.problems:
                print(f"terraform lint: {p}")
            print(f"terraform lint: FAILED with {len(self.problems)} problems ({summary})")
            return 1
        print(f"terraform lint: ok ({summary})")
        return 0


def main() -> int:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "terraform"
    return Lint(root.resolve()).run()


if __name__ == "__main__":
    sys.exit(main())
