import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  NotificationType,
  ServerOptions,
  State,
  TransportKind,
} from 'vscode-languageclient/node';
import { EditorCommand, executeParams } from './commands';
import { serverLaunch, serverSettings } from './settings';
import { formatStatus, StatusParams } from './status';

const LANGUAGES = [
  'python',
  'javascript',
  'typescript',
  'javascriptreact',
  'typescriptreact',
  'go',
  'rust',
  'c',
  'cpp',
  'java',
  'lua',
  'shellscript',
];

const statusNotification = new NotificationType<StatusParams>('dgls/status');

let client: LanguageClient | undefined;
let statusItem: vscode.StatusBarItem;
let output: vscode.LogOutputChannel;

function showStatus(params: StatusParams): void {
  const view = formatStatus(params);
  statusItem.text = view.text;
  statusItem.tooltip = view.tooltip;
  statusItem.backgroundColor = view.isError
    ? new vscode.ThemeColor('statusBarItem.errorBackground')
    : undefined;
  statusItem.show();
}

function settingsSection(): ReturnType<typeof serverSettings> {
  return serverSettings(vscode.workspace.getConfiguration('dgls'));
}

function makeClient(): LanguageClient {
  const launch = serverLaunch(vscode.workspace.getConfiguration('dgls'));
  const serverOptions: ServerOptions = {
    command: launch.command,
    args: launch.args,
    transport: TransportKind.stdio,
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.flatMap((language) => [
      { scheme: 'file', language },
      { scheme: 'untitled', language },
    ]),
    outputChannel: output,
    initializationOptions: { dgls: settingsSection() },
    middleware: {
      workspace: {
        // Answer the server's workspace/configuration pulls with the server keys only.
        configuration: (params, token, next) => {
          if (params.items.every((item) => item.section !== 'dgls')) {
            return next(params, token);
          }
          return params.items.map((item) =>
            item.section === 'dgls' ? settingsSection() : null,
          );
        },
      },
    },
  };
  const created = new LanguageClient('dgls', 'dgls', serverOptions, clientOptions);
  created.onNotification(statusNotification, showStatus);
  created.onDidChangeState((event) => {
    if (event.newState === State.Stopped) {
      showStatus({ state: 'stopped', message: 'server not running' });
    } else if (event.newState === State.Starting) {
      showStatus({ state: 'loading', message: 'starting server' });
    }
  });
  return created;
}

async function startClient(): Promise<void> {
  client = makeClient();
  try {
    await client.start();
  } catch (error) {
    const launch = serverLaunch(vscode.workspace.getConfiguration('dgls'));
    showStatus({ state: 'error', message: `could not start ${launch.command}: ${String(error)}` });
    void vscode.window.showErrorMessage(
      `dgls: could not start "${launch.command} ${launch.args.join(' ')}". ` +
        'Install dgls or set "dgls.server.path".',
    );
  }
}

async function restartClient(): Promise<void> {
  const old = client;
  client = undefined;
  if (old !== undefined) {
    await old.stop().catch(() => undefined);
  }
  await startClient();
}

async function runEditorCommand(which: EditorCommand): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (editor === undefined || client === undefined || !client.isRunning()) {
    void vscode.window.showWarningMessage('dgls: no active editor or the server is not running.');
    return;
  }
  const selection = which === 'complete'
    ? new vscode.Range(editor.selection.active, editor.selection.active)
    : editor.selection;
  const params = executeParams(
    which,
    client.code2ProtocolConverter.asUri(editor.document.uri),
    editor.document.version,
    client.code2ProtocolConverter.asRange(selection),
  );
  if (params === undefined) {
    void vscode.window.showInformationMessage('dgls: select the code to rewrite first.');
    return;
  }
  // The server answers by sending workspace/applyEdit, which the client applies.
  await client.sendRequest(ExecuteCommandRequest.type, params);
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel('dgls', { log: true });
  statusItem = vscode.window.createStatusBarItem('dgls.status', vscode.StatusBarAlignment.Right, 100);
  statusItem.name = 'dgls';
  statusItem.command = 'dgls.showLog';
  context.subscriptions.push(output, statusItem);

  const register = (id: string, run: () => Promise<void> | void) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, run));
  register('dgls.infill', () => runEditorCommand('infill'));
  register('dgls.rewrite', () => runEditorCommand('rewrite'));
  register('dgls.complete', () => runEditorCommand('complete'));
  register('dgls.restart', restartClient);
  register('dgls.showLog', () => output.show(true));

  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration('dgls') || client === undefined) {
        return;
      }
      if (event.affectsConfiguration('dgls.server')) {
        await restartClient();
      } else if (client.isRunning()) {
        await client.sendNotification(DidChangeConfigurationNotification.type, {
          settings: { dgls: settingsSection() },
        });
      }
    }),
  );
  await startClient();
}

export async function deactivate(): Promise<void> {
  if (client !== undefined) {
    await client.stop();
  }
}
