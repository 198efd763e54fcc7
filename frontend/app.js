'use strict';

// Sport Image Classifier page.
// Flow: files picked or dropped -> one card per file -> upload in jobs that fit the server's
// limits (GET /api/v1/limits) -> poll each job and update its cards until the job is done.

const PART_OVERHEAD = 1024; // bytes of multipart headers per file, with room for a long name
const POLL_INTERVAL_MS = 400;
const MAX_POLL_FAILURES = 5; // ride out short network hiccups while polling
const MAX_MESSAGES = 3;

const STATUS_TEXT = { queued: 'Queued', running: 'Classifying…', done: 'Done', failed: 'Failed' };
const FINAL_STATUSES = new Set(['done', 'failed']);

const $ = (id) => document.getElementById(id);
const dropZone = $('drop-zone');
const fileInput = $('file-input');
const resultsList = $('results');
const emptyNote = $('empty-note');
const messages = $('messages');
const progressNote = $('progress');
const modelInfo = $('model-info');

// ---------- Small helpers ----------

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatMegabytes(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

function formatPercent(confidence) {
  const clamped = Math.min(Math.max(Number(confidence) || 0, 0), 1);
  return `${(clamped * 100).toFixed(1)}%`;
}

function showMessage(text) {
  messages.append(el('p', 'message', text));
  while (messages.children.length > MAX_MESSAGES) messages.firstElementChild.remove();
}

// ---------- Talking to the API ----------

// fetch() only rejects on network failure; turn HTTP errors into Errors carrying the server's message.
async function request(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch {
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
function getLimits() {
  limitsRequest ??= request('/api/v1/limits').catch((error) => {
    limitsRequest = undefined;
    throw error;
  });
  return limitsRequest;
}

// A service run with API_KEY refuses submissions without it (401): the user is asked for the key,
// which is kept in this page's memory only, never in storage, and sent with each submission.
let apiKey = '';
async function createJob(files) {
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

// ---------- Cards ----------

function createPlaceholder() {
  return el('div', 'thumb-placeholder', 'No preview');
}

function createThumb(file) {
  const wrap = el('div', 'thumb');
  // Files with a known non-image type cannot be previewed; an empty type is worth a try.
  if (file.type && !file.type.startsWith('image/')) {
    wrap.append(createPlaceholder());
    return wrap;
  }
  const img = el('img');
  img.alt = ''; // the file name is shown right next to it
  const url = URL.createObjectURL(file);
  // Once decoded (or failed) the image no longer needs the blob URL.
  img.addEventListener('load', () => URL.revokeObjectURL(url), { once: true });
  img.addEventListener('error', () => {
    URL.revokeObjectURL(url);
    img.replaceWith(createPlaceholder());
  }, { once: true });
  img.src = url;
  wrap.append(img);
  return wrap;
}

function createCard(file) {
  const card = el('li', 'result-card');
  card.dataset.filename = file.name;
  const body = el('div', 'card-body');
  const name = el('p', 'card-filename', file.name);
  name.title = file.name;
  body.append(name, el('span', 'status-badge'), el('div', 'card-outcome'));
  card.append(createThumb(file), body);
  setStatus(card, 'queued');
  return card;
}

function setStatus(card, status) {
  card.dataset.status = status;
  const badge = card.querySelector('.status-badge');
  badge.className = `status-badge status-${status}`;
  badge.textContent = STATUS_TEXT[status] ?? status;
  updateProgress();
}

function renderTop3(card, top3) {
  const list = el('ol', 'top3');
  top3.forEach((prediction, rank) => {
    const isBest = rank === 0;
    const row = el('li', isBest ? 'top3-row is-best' : 'top3-row');
    const label = prediction.display_name || prediction.label;
    const bar = el('span', 'bar');
    bar.setAttribute('aria-hidden', 'true');
    const fill = el('span', 'bar-fill');
    fill.style.width = formatPercent(prediction.confidence);
    bar.append(fill);
    row.append(
      el('span', isBest ? 'top3-name top1-label' : 'top3-name', label),
      el('span', 'top3-pct', formatPercent(prediction.confidence)),
      bar,
    );
    list.append(row);
  });
  card.querySelector('.card-outcome').replaceChildren(list);
}

function failCard(card, message) {
  setStatus(card, 'failed');
  card.querySelector('.card-outcome').replaceChildren(el('p', 'card-error', message));
}

function applyResult(card, result) {
  const current = card.dataset.status;
  // Ignore repeats, and never move a finished card back to an earlier state.
  if (current === result.status || FINAL_STATUSES.has(current)) return;
  if (result.status === 'done') {
    setStatus(card, 'done');
    renderTop3(card, result.top3 ?? []);
  } else if (result.status === 'failed') {
    failCard(card, result.error?.message || 'This image could not be classified.');
  } else {
    setStatus(card, result.status);
  }
}

function failUnfinished(cards, message) {
  cards.filter((card) => !FINAL_STATUSES.has(card.dataset.status))
    .forEach((card) => failCard(card, message));
}

function updateProgress() {
  const cards = [...resultsList.querySelectorAll('.result-card')];
  const count = (status) => cards.filter((card) => card.dataset.status === status).length;
  const finished = count('done') + count('failed');
  const failedNote = count('failed') ? ` · ${count('failed')} failed` : '';
  const text = `${finished} of ${cards.length} photos processed${failedNote}`;
  // Only touch the live region when the wording changes, so it is not re-announced.
  if (progressNote.textContent !== text) progressNote.textContent = text;
}

function showModel(model) {
  if (!model?.name || modelInfo.dataset.shown) return;
  modelInfo.dataset.shown = 'true';
  modelInfo.textContent = `Model: ${model.name}${model.version ? ` · version ${model.version}` : ''}`;
}

// ---------- Jobs ----------

// Applies one poll answer to the cards; returns true once the job is finished.
function applyJob(job, cards) {
  showModel(job.model);
  // `index` is the file's position within this job's upload, i.e. within `cards`.
  (job.results ?? []).forEach((result) => {
    if (cards[result.index]) applyResult(cards[result.index], result);
  });
  if (job.status !== 'done') return false;
  failUnfinished(cards, 'The service finished without a result for this photo.');
  return true;
}

async function pollJob(url, cards) {
  let failures = 0;
  while (true) {
    try {
      if (applyJob(await request(url), cards)) return;
      failures = 0;
    } catch (error) {
      failures += 1;
      if (failures >= MAX_POLL_FAILURES) {
        showMessage(`Lost track of an upload: ${error.message}`);
        failUnfinished(cards, error.message);
        return;
      }
    }
    await sleep(POLL_INTERVAL_MS);
  }
}

async function submitBatch(files, cards) {
  let job;
  try {
    job = await createJob(files);
  } catch (error) {
    const what = files.length === 1 ? `"${files[0].name}"` : `${files.length} photos`;
    showMessage(`Could not upload ${what}: ${error.message}`);
    failUnfinished(cards, error.message);
    return;
  }
  // Not awaited: the next batch starts uploading while this one is being polled.
  pollJob(job.status_url || `/api/v1/jobs/${encodeURIComponent(job.job_id)}`, cards);
}

// Splits the selection into batches that each fit one request; a file over the per-image
// limit is not sent at all and fails alone.
function planBatches(files, cards, limits) {
  const batches = [];
  let batch = { files: [], cards: [], bytes: 0 };
  files.forEach((file, i) => {
    if (file.size > limits.max_image_bytes) {
      failCard(cards[i], `This file is ${formatMegabytes(file.size)}, over the limit of `
        + `${formatMegabytes(limits.max_image_bytes)} per photo.`);
      return;
    }
    const cost = file.size + PART_OVERHEAD;
    const full = batch.files.length === limits.max_images_per_job
      || batch.bytes + cost > limits.max_request_bytes;
    if (batch.files.length && full) {
      batches.push(batch);
      batch = { files: [], cards: [], bytes: 0 };
    }
    batch.files.push(file);
    batch.cards.push(cards[i]);
    batch.bytes += cost;
  });
  if (batch.files.length) batches.push(batch);
  return batches;
}

async function handleFiles(files) {
  if (files.length === 0) return;
  const cards = files.map(createCard);
  emptyNote.hidden = true;
  resultsList.prepend(...cards); // newest selection on top, in the chosen order
  updateProgress();
  let limits;
  try {
    limits = await getLimits();
  } catch (error) {
    showMessage(`Could not upload: ${error.message}`);
    failUnfinished(cards, error.message);
    return;
  }
  for (const batch of planBatches(files, cards, limits)) {
    await submitBatch(batch.files, batch.cards);
  }
}

// ---------- Sports list (loaded the first time it is opened) ----------

async function loadClasses(details) {
  const list = $('classes-list');
  details.dataset.loaded = 'true';
  try {
    const { classes, display_names: names = {} } = await request('/api/v1/classes');
    list.replaceChildren(...classes.map((label) => el('li', '', names[label] || label)));
  } catch (error) {
    list.replaceChildren(el('li', 'classes-error', `Could not load the list: ${error.message}`));
    delete details.dataset.loaded; // try again next time it is opened
  }
}

// ---------- Wiring ----------

function setupDropZone() {
  const openPicker = () => fileInput.click();
  dropZone.addEventListener('click', openPicker);
  dropZone.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault(); // Space would otherwise scroll the page
      openPicker();
    }
  });
  dropZone.addEventListener('dragover', (event) => {
    event.preventDefault();
    dropZone.classList.add('is-dragover');
  });
  dropZone.addEventListener('dragleave', (event) => {
    // Moving over a child element also fires dragleave; only react when leaving the zone.
    if (!dropZone.contains(event.relatedTarget)) dropZone.classList.remove('is-dragover');
  });
  dropZone.addEventListener('drop', (event) => {
    event.preventDefault();
    dropZone.classList.remove('is-dragover');
    handleFiles([...event.dataTransfer.files]);
  });
  // A file dropped just outside the zone should not make the browser navigate away.
  ['dragover', 'drop'].forEach((type) => window.addEventListener(type, (e) => e.preventDefault()));
  fileInput.addEventListener('change', () => {
    const files = [...fileInput.files];
    fileInput.value = ''; // allow picking the same files again later
    handleFiles(files);
  });
}

setupDropZone();
$('classes-details').addEventListener('toggle', (event) => {
  const details = event.target;
  if (details.open && !details.dataset.loaded) loadClasses(details);
});
