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
  audit    Check the hash-chained audit log of data access.
  build    Check FILE and write its artifacts (fm.lock.json, …) into the...
  check    Parse and check FILES, then verify their constraints with Z3;...
  data     Work with datasets: review what the cleaning rules did.
  diff     Compare versions A and B (hash prefix, name or name@N):...
  explain  Describe diagnostic CODE (for example FM0301) at length.
  fmt      Format .fm FILES canonically, keeping comments (idempotent).
  label    Work with labels blocks: suggest labeling functions from gold...
  log      List the registered adapter versions of a build (a spec file or...
  lsp      Run the language server for editors (LSP over stdin/stdout).
  plan     Show what FILE would run: stages, chosen knobs, estimates,...
  run      Run FILE's stages (data, labels, …) into the build folder,...
  serve    Serve FILE's deployed model and its adapters over HTTP...
"""
