// Pure formatting of the server's `dgls/status` notification for the status bar.

export type StatusState = 'loading' | 'ready' | 'busy' | 'error' | 'stopped';

export interface StatusParams {
  state: string;
  message?: string;
}

export interface StatusView {
  state: StatusState;
  text: string;
  tooltip: string;
  isError: boolean;
}

const ICONS: Record<StatusState, string> = {
  loading: '$(loading~spin)',
  busy: '$(sync~spin)',
  ready: '$(check)',
  error: '$(error)',
  stopped: '$(circle-slash)',
};

function asState(state: string): StatusState {
  return state in ICONS ? (state as StatusState) : 'error';
}

/** Status-bar text and tooltip for one `dgls/status` payload; unknown states read as errors. */
export function formatStatus(params: StatusParams): StatusView {
  const state = asState(params.state);
  const message = (params.message ?? '').trim();
  const label = state === params.state ? state : `unknown state "${params.state}"`;
  return {
    state,
    text: `${ICONS[state]} dgls`,
    tooltip: message === '' ? `dgls: ${label}` : `dgls: ${label} — ${message}`,
    isError: state === 'error',
  };
}
