import assert from 'node:assert/strict';
import { test } from 'node:test';
import { formatStatus } from '../src/status';

test('each state has its icon and the message in the tooltip', () => {
  const ready = formatStatus({ state: 'ready', message: 'tiny model on cpu' });
  assert.equal(ready.text, '$(check) dgls');
  assert.equal(ready.tooltip, 'dgls: ready — tiny model on cpu');
  assert.equal(ready.isError, false);
  assert.match(formatStatus({ state: 'loading', message: '' }).text, /loading~spin/);
  assert.match(formatStatus({ state: 'busy' }).text, /sync~spin/);
  assert.equal(formatStatus({ state: 'busy' }).tooltip, 'dgls: busy');
});

test('error and unknown states are shown as errors', () => {
  assert.equal(formatStatus({ state: 'error', message: 'no model' }).isError, true);
  const odd = formatStatus({ state: 'sleeping', message: 'zzz' });
  assert.equal(odd.state, 'error');
  assert.equal(odd.tooltip, 'dgls: unknown state "sleeping" — zzz');
});
