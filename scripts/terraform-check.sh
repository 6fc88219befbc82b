#!/usr/bin/env bash
# Static checks of terraform/ and the Dockerfile (nothing is applied; see
# terraform/README.md). Run by .ci/run; locally: bash scripts/terraform-check.sh
#
#  1. terraform fmt -check -recursive       (when a terraform binary is present)
#  2. terraform init -backend=false + validate on every module and env
#                                            (when providers can be installed: a
#                                            plugin cache or mirror; skipped with
#                                            a notice otherwise)
#  3. checkov (PyPI, pinned) on terraform/ and the Dockerfile, offline, in a
#     network namespace when possible: zero failed checks, zero parse errors;
#     every skip is inline with its reason
#  4. scripts/terraform_lint.py (python-hcl2, pinned): every file parses, every
#     variable is typed, described and validated, every env wires every
#     required module variable, providers pinned, no secrets or account ids
#
# Installs checkov and python-hcl2 into ./.venv when missing (pip's own cache
# only). Exits non-zero on the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VERSION=3.3.30
HCL2_VERSION=8.1.4
VENV=.venv
# python-hcl2 lives in its own directory: checkov depends on a fork of it
# (bc-python-hcl2) that installs the same `hcl2` package name.
HCL2_DIR=$VENV/python-hcl2

start=$(date +%s)
say() { echo "terraform-check: $*"; }

# ---- tools ----------------------------------------------------------------------
command -v python3 >/dev/null || { echo "terraform-check: python3 is required" >&2; exit 1; }
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
if [ "$("$VENV/bin/checkov" --version 2>/dev/null || true)" != "$CHECKOV_VERSION" ]; then
  say "installing checkov $CHECKOV_VERSION into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi
if ! PYTHONPATH=$HCL2_DIR "$VENV/bin/python" -c \
    "import sys, hcl2; sys.exit(getattr(hcl2, '__version__', '') != '$HCL2_VERSION')" 2>/dev/null; then
  say "installing python-hcl2 $HCL2_VERSION into $HCL2_DIR"
  rm -rf "$HCL2_DIR"
  "$VENV/bin/pip" install -q --disable-pip-version-check --target "$HCL2_DIR" "python-hcl2==$HCL2_VERSION"
fi

# ---- 1 + 2: terraform fmt / validate ----------------------------------------------
if command -v terraform >/dev/null; then
  # A configured but missing CLI config file only makes terraform warn.
  if [ -n "${TF_CLI_CONFIG_FILE:-}" ] && [ ! -e "$TF_CLI_CONFIG_FILE" ]; then unset TF_CLI_CONFIG_FILE; fi
  say "terraform $(terraform version -json 2>/dev/null | sed -n 's/.*"terraform_version": *"\([^"]*\)".*/\1/p'): fmt -check -recursive"
  terraform fmt -check -recursive -diff terraform
  # validate in a copy, so init's .terraform/ and lock files never land in the tree
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cp -r terraform "$work/"
  validated=0
  for dir in "$work"/terraform/modules/* "$work"/terraform/envs/*; do
    rel=${dir#"$work"/}
    if ! (cd "$dir" && timeout 300 terraform init -backend=false -input=false -no-color >"$work/init.log" 2>&1); then
      say "NOTICE: terraform validate skipped for every module and env: 'terraform init' could not install providers (tried $rel)"
      say "NOTICE: (no registry access and no plugin cache or mirror); init said:"
      grep -m1 -A3 'Error' "$work/init.log" | sed 's/^/    /' || tail -n 4 "$work/init.log" | sed 's/^/    /'
      break
    fi
    (cd "$dir" && terraform validate -no-color) | sed "s|^|    $rel: |"
    validated=$((validated + 1))
  done
  say "terraform validate: $validated directories validated"
else
  say "NOTICE: no terraform binary: fmt -check and validate skipped (checkov and the HCL lint still run)"
fi

# ---- 3: checkov ------------------------------------------------------------------
# Offline: no platform download, no version check, no external modules; parse
# errors fail the run. Inside an empty network namespace when we may create one.
export CKV_SKIP_PACKAGE_UPDATE_CHECK=true BC_SKIP_MAPPING=TRUE CKV_PARSE_ERROR_FAIL=true LOG_LEVEL=ERROR
netns=()
if unshare -n true 2>/dev/null; then netns=(unshare -n); fi
run_checkov() { # run_checkov LABEL ARGS...
  local label=$1 out rc
  shift
  set +e
  out=$("${netns[@]}" "$VENV/bin/checkov" "$@" --quiet --compact --skip-download --download-external-modules false 2>&1)
  rc=$?
  set -e
  if [ $rc -ne 0 ] || grep -q 'Parsing errors: [1-9]' <<<"$out"; then
    echo "$out"
    say "checkov ($label) FAILED"
    exit 1
  fi
  say "checkov ($label): $(grep -m1 'Passed checks' <<<"$out")"
}
run_checkov terraform -d terraform --framework terraform
run_checkov Dockerfile -f Dockerfile --framework dockerfile
say "checkov skips (each justified inline): $(grep -rhoE '#checkov:skip=CKV[A-Z0-9_]+' terraform Dockerfile | sort | uniq -c | awk '{printf "%s%s x%s", sep, substr($2, 15), $1; sep=", "}')"

# ---- 4: HCL lint -------------------------------------------------------------------
PYTHONPATH=$HCL2_DIR "$VENV/bin/python" scripts/terraform_lint.py terraform

say "all checks passed in $(( $(date +%s) - start )) s"
