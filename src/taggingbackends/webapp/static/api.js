// Talking to the server: every call carries the session token in the X-Token header.
const token = new URLSearchParams(window.location.search).get("token") || "";

async function call(method, path, body) {
  const options = { method, headers: { "X-Token": token } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const text = await response.text();
  let data;
  try { data = JSON.parse(text); } catch { data = { error: text }; }
  if (!response.ok) {
    const error = new Error(data.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

export const api = {
  session: () => call("GET", "/api/session"),
  ethogram: () => call("GET", "/api/ethogram"),
  larva: (id) => call("GET", `/api/larva/${id}`),
  frames: (t0, t1) => call("GET", `/api/frames?t0=${t0}&t1=${t1}`),
  review: () => call("GET", "/api/review"),
  edit: (larva, first, last, label) => call("POST", "/api/edit", { larva, first, last, label }),
  undo: () => call("POST", "/api/undo", {}),
  redo: () => call("POST", "/api/redo", {}),
  save: (name, overwrite) => call("POST", "/api/save", { name, overwrite }),
  retrainStatus: () => call("GET", "/api/retrain"),
  retrain: (iterations, scope) => call("POST", "/api/retrain", { iterations, scope }),
};
