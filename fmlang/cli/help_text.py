"""Cached `fmc --help` (see entry.py); regenerate with `make help-text`."""

HELP = """\
Usage: fmc [OPTIONS] COMMAND [ARGS]...

  fmc compiles .fm specs: data, labels, models, constraints and deployments.

  fmc check spec.fm           report every problem in a spec
  fmc build spec.fm -o out    write the build folder (fm.lock.json, …)
  fmc fmt spec.fm             format specs in place (--check to only verify)
  fmc explain FM0301          describe a diagnostic code

Options:
  --version   Show the version and exit.
  -h, --help  Show this message and exit.

Commands:
  build    Check FILE and write its artifacts (fm.lock.json, …) into the...
  check    Parse and check FILES, then verify their constraints with Z3;...
  explain  Describe diagnostic CODE (for example FM0301) at length.
  fmt      Format .fm FILES canonically, keeping comments (idempotent).
  lsp      Run the language server for editors (LSP over stdin/stdout).
  plan     Show what FILE would run: stages, chosen knobs, estimates,...
"""
