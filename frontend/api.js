// Talking to the API. Every HTTP error becomes an Error carrying the server's own message and
// the HTTP status, so the page can tell a person what went wrong.

// Held by the server until the job is done; long enough to cost few requests, well under the
// server's 30 s cap and a proxy's usual idle timeout.
const LONG_POLL_S = 20;

export async function request(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new Error('Could not reach the server. Check your connection and try again.');
  }
  if (!response.ok) {
    const error = new Error(await describeHttpError(response));
    error.status = response.status;
    throw error;
  }
  return response.json();
}

async function describeHttpError(response) {
  let message = `The server answered with an error (HTTP ${response.status}).`;
  try {
    const body = await response.json();
    if (body?.error?.message) message = body.error.message;
  } catch {
    // Body was not JSON (e.g. a proxy error page): keep the generic text.
  }
  const retryAfter = response.headers.get('Retry-After');
  if (response.status === 503 && retryAfter) {
    message += /^\d+$/.test(retryAfter)
      ? ` Please try again in ${retryAfter} seconds.`
      : ' Please try again shortly.';
  }
  return message;
}

// Asked once; asked again next time if it failed.
let limitsRequest;
export function getLimits() {
  limitsRequest ??= request('/api/v1/limits').catch((error) => {
    limitsRequest = undefined;
    throw error;
  });
  return limitsRequest;
}

// A service run with API_KEY refuses submissions without it (401): the user is asked for the key,
// which is kept in this page's memory only, never in storage, and sent with each submission.
let apiKey = '';
export async function createJob(files) {
  const form = new FormData();
  files.forEach((file) => form.append('file', file, file.name));
  while (true) {
    try {
      const headers = apiKey ? { 'X-API-Key': apiKey } : {};
      return await request('/api/v1/jobs', { method: 'POST', body: form, headers });
    } catch (error) {
      const key = error.status === 401 ? window.prompt(`${error.message}. API key:`) : null;
      if (!key) throw error;
      apiKey = key;
    }
  }
}

// A long poll: answered as soon as the job is done, or as it stands after LONG_POLL_S.
export function getJob(statusUrl, signal) {
  return request(`${statusUrl}?wait=${LONG_POLL_S}`, { signal });
}

export const getModel = () => request('/api/v1/model');

export const getClasses = () => request('/api/v1/classes');
