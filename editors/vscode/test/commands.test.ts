import assert from 'node:assert/strict';
import { test } from 'node:test';
import { executeParams } from '../src/commands';

const at = (line: number, character: number) => ({ line, character });
const sel = { start: at(1, 2), end: at(3, 4) };
const cursor = { start: at(5, 6), end: at(5, 6) };

test('infill and rewrite on a selection send the selection', () => {
  assert.deepEqual(executeParams('infill', 'file:///a.py', 7, sel), {
    command: 'dgls.infillSelection',
    arguments: [{ textDocument: { uri: 'file:///a.py', version: 7 }, range: sel }],
  });
  assert.equal(executeParams('rewrite', 'file:///a.py', 7, sel)?.command, 'dgls.rewriteSelection');
});

test('complete and an empty infill send completeHere with start == end', () => {
  for (const which of ['complete', 'infill'] as const) {
    const params = executeParams(which, 'file:///a.py', 2, cursor);
    assert.equal(params?.command, 'dgls.completeHere');
    assert.deepEqual(params?.arguments[0].range, cursor);
  }
});

test('rewrite needs a selection', () => {
  assert.equal(executeParams('rewrite', 'file:///a.py', 2, cursor), undefined);
});
