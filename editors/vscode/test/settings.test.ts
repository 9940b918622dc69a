import assert from 'node:assert/strict';
import { test } from 'node:test';
import { serverLaunch, serverSettings, SettingsReader } from '../src/settings';

function reader(values: Record<string, unknown>): SettingsReader {
  return { get: <T>(key: string) => values[key] as T | undefined };
}

test('server settings keep only the server keys, unset as null', () => {
  const got = serverSettings(
    reader({ model: ' /m ', steps: 12, debounceMs: 80, 'server.path': '/bin/dgls', device: '' }),
  );
  assert.deepEqual(got, {
    model: '/m',
    device: null,
    dtype: null,
    maxSpanTokens: null,
    steps: 12,
    debounceMs: 80,
    logLevel: null,
    quantize: null,
    infillLayout: null,
    engineUrl: null,
    engineApiKeyEnv: null,
    deadlineMs: null,
    commandDeadlineMs: null,
    threads: null,
    engineTimeout: null,
    engineAllowHttp: null,
  });
});

test('the reliability, precision and team-server settings pass through with their types', () => {
  const got = serverSettings(
    reader({ deadlineMs: 2500, threads: 2, quantize: '8bit', engineUrl: 'https://gpu:8000',
      engineAllowHttp: true, engineTimeout: 'soon', infillLayout: 5 }),
  );
  assert.equal(got.deadlineMs, 2500);
  assert.equal(got.threads, 2);
  assert.equal(got.quantize, '8bit');
  assert.equal(got.engineUrl, 'https://gpu:8000');
  assert.equal(got.engineAllowHttp, true);
  assert.equal(got.engineTimeout, null);
  assert.equal(got.infillLayout, null);
});

test('non-finite and wrongly typed values become null', () => {
  const got = serverSettings(reader({ steps: Number.NaN, maxSpanTokens: '32', logLevel: 3 }));
  assert.equal(got.steps, null);
  assert.equal(got.maxSpanTokens, null);
  assert.equal(got.logLevel, null);
});

test('launch defaults to dgls serve on PATH', () => {
  assert.deepEqual(serverLaunch(reader({})), { command: 'dgls', args: ['serve'] });
  assert.deepEqual(serverLaunch(reader({ 'server.path': '  ' })), { command: 'dgls', args: ['serve'] });
});

test('launch appends extra string args after serve', () => {
  const got = serverLaunch(reader({ 'server.path': '/opt/dgls', 'server.args': ['--model', '/tmp/m', 7] }));
  assert.deepEqual(got, { command: '/opt/dgls', args: ['serve', '--model', '/tmp/m'] });
});
