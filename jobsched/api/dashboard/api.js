// Talking to this node: JSON over fetch, with a bearer token when the cluster asks
// for one (401). The token lives in this tab only (sessionStorage); one question at
// a time, however many requests were refused meanwhile.

const TOKEN_KEY = 'jobsched.token';
let token = sessionStorage.getItem(TOKEN_KEY) || '';
let asking = null; // the open question, shared by every refused request
let declined = false;
let askUser = async () => null;

/** `ask(reason)` shows the question and resolves to a token, or null when declined. */
export function setTokenPrompt(ask) {
  askUser = ask;
}

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.code = (body && body.code) || null;
    this.body = body || {};
  }
}

/** fetch() with the token; on 401 asks for one (once) and tries again. */
export async function call(method, path, { body, headers = {}, signal } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const sent = token;
    const all = { Accept: 'application/json', ...headers };
    if (body !== undefined) all['Content-Type'] = 'application/json';
    if (sent) all.Authorization = `Bearer ${sent}`;
    const response = await fetch(path, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: 'no-store',
    });
    if (response.status !== 401 || attempt >= 3 || !(await newToken(sent))) return response;
  }
}

async function newToken(refused) {
  if (token !== refused) return true; // someone answered the question meanwhile
  if (declined) return false;
  if (!asking) {
    asking = askUser(refused ? 'That token was not accepted.' : '').then((answer) => {
      asking = null;
      if (!answer) {
        declined = true;
        return false;
      }
      token = answer;
      sessionStorage.setItem(TOKEN_KEY, answer);
      return true;
    });
  }
  return asking;
}

/** Ask again after the user declined (the "token" button of an error toast). */
export function allowTokenQuestion() {
  declined = false;
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: text };
  }
}

/** GET a JSON answer; {data, headers}. Throws ApiError. */
export async function getJson(path, options) {
  const response = await call('GET', path, options);
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data);
  return { data, headers: response.headers };
}

/** POST/DELETE with a JSON body; the answer's JSON. Throws ApiError. */
export async function send(method, path, body) {
  const response = await call(method, path, { body });
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const isAbort = (error) => error && error.name === 'AbortError';
