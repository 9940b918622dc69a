// Pure construction of the `workspace/executeCommand` calls the editor commands send.

export interface Position {
  line: number;
  character: number;
}

export interface Range {
  start: Position;
  end: Position;
}

export type EditorCommand = 'infill' | 'rewrite' | 'complete';

/** Server command ids (advertised in executeCommandProvider; see DESIGN.md §4). */
export const SERVER_COMMANDS = {
  infill: 'dgls.infillSelection',
  rewrite: 'dgls.rewriteSelection',
  complete: 'dgls.completeHere',
} as const;

export interface CommandArgument {
  textDocument: { uri: string; version: number };
  range: Range;
}

export interface ExecuteCommandParams {
  command: string;
  arguments: [CommandArgument];
}

function isEmpty(range: Range): boolean {
  return range.start.line === range.end.line && range.start.character === range.end.character;
}

/**
 * The executeCommand params for an editor command on a selection. An empty selection infills
 * at the cursor (completeHere); rewrite needs text to rewrite and returns undefined without it.
 */
export function executeParams(
  which: EditorCommand,
  uri: string,
  version: number,
  selection: Range,
): ExecuteCommandParams | undefined {
  let command: string = SERVER_COMMANDS[which];
  let range = selection;
  if (which === 'complete' || isEmpty(selection)) {
    if (which === 'rewrite') {
      return undefined;
    }
    command = SERVER_COMMANDS.complete;
    range = { start: selection.end, end: selection.end };
  }
  return { command, arguments: [{ textDocument: { uri, version }, range }] };
}
