#!/bin/sh
# Build the extension's .vsix with the official packager (vsce, from the npm registry):
#   sh editors/vscode/package.sh        → editors/vscode/fmc-fm-<version>.vsix
# The .vsix carries the grammar, the language configuration, extension.js and its one
# runtime dependency (vscode-languageclient); `code --install-extension FILE` installs it.
set -eu
cd "$(dirname "$0")"
VSCE_VERSION=3.9.2  # 4.x needs node 22
version=$(node -p "require('./package.json').version")
out="fmc-fm-$version.vsix"
npm install --no-audit --no-fund --loglevel=error
npx --yes "@vscode/vsce@$VSCE_VERSION" package --skip-license --allow-missing-repository --out "$out"
echo "built editors/vscode/$out"
