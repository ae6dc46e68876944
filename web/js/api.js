// api.js — the dashboard's one client for mapsaged's HTTP API (docs/api.md). Views never
// call fetch themselves: every call here returns the parsed JSON (text for the log) or
// throws an ApiError carrying the status and the server's {error, errors}. When the daemon
// wants a token (401 on a change), the user is asked once and it is kept in localStorage.

const TOKEN_KEY = 'mapsage.token';

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
    this.errors = (body && body.errors) || []; // [{path, message}] for an invalid config
  }
}

function storedToken() {
  try {
    return localStorage.getItem(TOKEN_KEY);
  } catch {
    return null; // storage can be disabled; then every change asks again
  }
}

async function call(method, path, {body, retry = true, text = false} = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const token = storedToken();
  if (token && method !== 'GET') headers.Authorization = `Bearer ${token}`;
  const payload = body === undefined || typeof body === 'string' ? body : JSON.stringify(body);
  const response = await fetch(path, {method, headers, body: payload, cache: 'no-store'});
  if (response.status === 401 && retry && method !== 'GET') {
    const given = prompt('This daemon needs a token for changes (the content of its --token-file):');
    if (given) {
      try {
        localStorage.setItem(TOKEN_KEY, given.trim());
      } catch { /* kept for nothing: asked again next time */ }
      return call(method, path, {body, text, retry: false});
    }
  }
  const type = response.headers.get('Content-Type') || '';
  const json = type.startsWith('application/json') && !(text && response.ok);
  const data = json ? await response.json() : await response.text();
  if (!response.ok) throw new ApiError(response.status, typeof data === 'object' ? data : {error: data});
  return data;
}

function query(parameters) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(parameters)) if (value != null && value !== '') search.set(key, value);
  const text = search.toString();
  return text ? `?${text}` : '';
}

export const api = {
  health: () => call('GET', '/api/health'),
  // {experiments: [...], next_before}; status: one status or several joined by commas.
  // Also: tag, where ('optimizer.lr>0.01,…'), archived ('1', 'all'), columns, sort, order,
  // offset (docs/api.md, "The list's options").
  experiments: ({status, name, tag, where, archived, columns, sort, order, limit, before, offset} = {}) =>
    call('GET', `/api/experiments${query({status, name, tag, where, archived, columns, sort, order, limit, before,
      offset})}`),
  // {name, note, tags, add_tags, remove_tags, archived}: answers the changed experiment.
  patchExperiment: (id, changes) => call('PATCH', `/api/experiments/${id}`, {body: changes}),
  deleteExperiment: (id) => call('DELETE', `/api/experiments/${id}`),
  patchStudy: (id, changes) => call('PATCH', `/api/studies/${id}`, {body: changes}),
  experiment: (id) => call('GET', `/api/experiments/${id}`),
  // {name: {step: [], value: [], epoch?: []}}; names: an array of metric names.
  metrics: (id, {names, sinceStep} = {}) =>
    call('GET', `/api/experiments/${id}/metrics${query({names: names && names.join(','), since_step: sinceStep})}`),
  log: (id) => call('GET', `/api/experiments/${id}/log`),
  // The config goes as the user wrote it: the server names the line of a JSON error.
  submit: (configText) => call('POST', '/api/experiments', {body: configText}),
  cancel: (id) => call('POST', `/api/experiments/${id}/cancel`),
  sql: (sql, params = []) => call('POST', '/api/sql', {body: {sql, params}}),
  // Studies (docs/api.md): {studies: [...], next_before}; one study with its runs and
  // statistics; each arm's mean curves ({name: {x, series}}), at most `points` per arm.
  studies: ({limit, before, archived} = {}) => call('GET', `/api/studies${query({limit, before, archived})}`),
  study: (id) => call('GET', `/api/studies/${id}`),
  studyCurves: (id, {names, points} = {}) =>
    call('GET', `/api/studies/${id}/curves${query({names: names && names.join(','), points})}`),
  cancelStudy: (id) => call('POST', `/api/studies/${id}/cancel`),
  submitStudy: (specText, {dryRun = false} = {}) =>
    call('POST', `/api/studies${dryRun ? '?dry_run=1' : ''}`, {body: specText}),
  // The dataset registry (docs/datasets.md): {datasets, datasets_dir}; one dataset with its
  // statistics (the first look at one not read yet reads it); its sample images.
  datasets: () => call('GET', '/api/datasets'),
  dataset: (name) => call('GET', `/api/datasets/${encodeURIComponent(name)}`),
  datasetSamples: (name) => call('GET', `/api/datasets/${encodeURIComponent(name)}/samples`),
  examples: () => call('GET', '/examples/index.json'),
  // The file as written (its layout is the template), not reparsed.
  example: (file) => call('GET', `/examples/${encodeURIComponent(file)}`, {text: true}),
};

export const streamUrl = {
  experiment: (id) => `/api/experiments/${id}/stream`,
  events: () => '/api/events',
  study: (id) => `/api/studies/${id}/stream`,
};

// Files a link downloads (docs/api.md, "Models out"): GETs need no token, and the daemon
// names each file in its Content-Disposition.
export const downloadUrl = {
  checkpoint: (id, epoch) => `/api/experiments/${id}/checkpoints/${epoch}`,
  safetensors: (id, epoch) => `/api/experiments/${id}/export${query({format: 'safetensors', epoch})}`,
};
