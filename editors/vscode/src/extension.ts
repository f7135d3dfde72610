// Starts `journeyc lsp` for .journey files and connects VS Code to it.
import * as vscode from "vscode";
import { LanguageClient, LanguageClientOptions, ServerOptions, TransportKind } from "vscode-languageclient/node";

let client: LanguageClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const config = vscode.workspace.getConfiguration("journey");
  const command = config.get<string>("server.path", "journeyc");
  const server: ServerOptions = {
    run: { command, args: ["lsp"], transport: TransportKind.stdio },
    debug: { command, args: ["lsp"], transport: TransportKind.stdio },
  };
  const options: LanguageClientOptions = {
    documentSelector: [{ scheme: "file", language: "journey" }],
    initializationOptions: { debounceMs: config.get<number>("server.debounceMs", 10) },
    synchronize: {
      // Files changed outside the editor (git checkout, journeyc fmt) are re-read.
      fileEvents: vscode.workspace.createFileSystemWatcher("**/*.journey"),
    },
  };
  client = new LanguageClient("journey", "Journey (journeyc lsp)", server, options);
  context.subscriptions.push(client);
  await client.start();
}

export async function deactivate(): Promise<void> {
  if (client) {
    await client.stop();
  }
}
