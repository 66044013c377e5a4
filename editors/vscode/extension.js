// The fmc extension: starts `fmc lsp` and connects VS Code to it. Plain JavaScript, no build.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function serverOptions(config) {
  const command = config.get("server.command", "fmc");
  const args = ["lsp", ...config.get("server.extraArgs", [])];
  return { command, args, transport: TransportKind.stdio };
}

async function activate(context) {
  const config = vscode.workspace.getConfiguration("fmc");
  const clientOptions = {
    documentSelector: [{ language: "fm" }],
    initializationOptions: {
      verify: config.get("verify", true),
      debounceMs: config.get("debounceMs", 100),
    },
  };
  client = new LanguageClient("fmc", "fmc language server", serverOptions(config), clientOptions);
  context.subscriptions.push(
    vscode.commands.registerCommand("fmc.restartServer", () => client.restart()),
  );
  await client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
