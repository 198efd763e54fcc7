// Sport Image Classifier page.
// Flow: photos picked, dropped, pasted or taken from the samples -> one card each -> uploaded in
// jobs that fit the server's limits (GET /api/v1/limits) -> each job long-polled until done.
// The photos and their jobs are kept in sessionStorage, so a reload shows the same cards.

import * as api from './api.js';
import * as polling from './polling.js';
import {
  clearOutcome, createCard, el, formatPercent, setStatus, showError, showPredictions, showThumb, showTime,
} from './cards.js';
import { downloadCsv, downloadJson } from './export.js';
import { loadSaved, save } from './saved.js';

const PART_OVERHEAD = 1024; // bytes of multipart headers per file, with room for a long name
const MAX_MESSAGES = 3;
const SAVE_DELAY_MS = 200; // changes come in bursts (a selection's thumbnails, a job's results): save once
const THUMB_PX = 256; // longest side of a stored thumbnail: sharp on a card, small in storage
const SAMPLES = ['surfing.jpg', 'archery.jpg', 'mushing.jpg', 'table-tennis.jpg'];
const FINAL_STATUSES = new Set(['done', 'failed']);

const $ = (id) => document.getElementById(id);
const resultsList = $('results');
const messages = $('messages');
const progressNote = $('progress');
const buttons = {
  retry: $('retry-button'), csv: $('csv-button'), json: $('json-button'), clear: $('clear-button'),
};

// Every photo on the page, newest selection first. A photo: {name, thumb, card, status, result,
// error, seconds, statusUrl, index (its place in that job), file and sentAt (this page load only)}.
let photos = [];
let saveTimer;

const onPage = (photo) => photos.includes(photo);

function showMessage(text) {
  messages.append(el('p', 'message', text));
  while (messages.children.length > MAX_MESSAGES) messages.firstElementChild.remove();
}

// ---------- The page's state, drawn and saved ----------

function refresh() {
  const count = (status) => photos.filter((photo) => photo.status === status).length;
  const failed = count('failed');
  const text = photos.length
    ? `${count('done') + failed} of ${photos.length} photos processed${failed ? ` · ${failed} failed` : ''}`
    : '';
  // Only touch the live region when the wording changes, so it is not re-announced.
  if (progressNote.textContent !== text) progressNote.textContent = text;
  $('empty-note').hidden = photos.length > 0;
  buttons.retry.disabled = failed === 0;
  buttons.csv.disabled = buttons.json.disabled = buttons.clear.disabled = photos.length === 0;
  clearTimeout(saveTimer);
  saveTimer = setTimeout(saveNow, SAVE_DELAY_MS);
}

function saveNow() {
  clearTimeout(saveTimer);
  save(photos.map(({ name, thumb, statusUrl, index, seconds, error }) => (
    { name, thumb, statusUrl, index, seconds, error })));
}

function addPhoto(name, fields) {
  const photo = { name, status: 'queued', card: createCard(name), ...fields };
  if (photo.thumb !== undefined) showThumb(photo.card, photo.thumb);
  return photo;
}

function setPhotoStatus(photo, status) {
  photo.status = status;
  setStatus(photo.card, status);
}

function fail(photo, message) {
  setPhotoStatus(photo, 'failed');
  photo.error = message;
  showError(photo.card, message);
}

function failUnfinished(list, message) {
  list.filter((photo) => photo && !FINAL_STATUSES.has(photo.status)).forEach((photo) => fail(photo, message));
}

// From sending to the result, as seen here; for a photo sent before a reload, the job's own times.
function secondsTaken(photo, job) {
  if (photo.sentAt) return (Date.now() - photo.sentAt) / 1000;
  const span = Date.parse(job.finished_at) - Date.parse(job.created_at);
  return Number.isFinite(span) ? span / 1000 : null;
}

function applyResult(photo, result, job) {
  // Ignore repeats, and never move a finished photo back to an earlier state.
  if (photo.status === result.status || FINAL_STATUSES.has(photo.status)) return;
  if (!FINAL_STATUSES.has(result.status)) {
    setPhotoStatus(photo, result.status);
    return;
  }
  photo.seconds ??= secondsTaken(photo, job);
  photo.result = result;
  showTime(photo.card, photo.seconds);
  if (result.status === 'done') {
    photo.file = undefined; // only a failed photo is ever sent again
    setPhotoStatus(photo, 'done');
    showPredictions(photo.card, result);
  } else {
    fail(photo, result.error?.message || 'This image could not be classified.');
  }
}

// ---------- Following a job ----------

function followJob(url, jobPhotos) {
  // A photo retried since belongs to its new job.
  const stillHere = () => jobPhotos.filter((photo) => photo?.statusUrl === url);
  polling.follow(url, (answer) => {
    (answer.results ?? []).forEach((result) => {
      const photo = jobPhotos[result.index]; // `index`: the photo's place in the job's upload
      if (photo?.statusUrl === url) applyResult(photo, result, answer);
    });
    if (answer.status === 'done') failUnfinished(stillHere(), 'The service finished without a result for this photo.');
    refresh();
    return answer.status === 'done';
  }, (error) => {
    if (error.status === 404) {
      failUnfinished(stillHere(), 'This result is no longer kept by the server.');
    } else {
      showMessage(`Lost track of an upload: ${error.message}`);
      failUnfinished(stillHere(), error.message);
    }
    refresh();
  });
}

// ---------- Sending photos ----------

async function submitBatch(batch) {
  batch.forEach((photo) => { photo.sentAt = Date.now(); });
  let job;
  try {
    job = await api.createJob(batch.map((photo) => photo.file));
  } catch (error) {
    const what = batch.length === 1 ? `"${batch[0].name}"` : `${batch.length} photos`;
    showMessage(`Could not upload ${what}: ${error.message}`);
    failUnfinished(batch, error.message);
    refresh();
    return;
  }
  const url = job.status_url || `/api/v1/jobs/${encodeURIComponent(job.job_id)}`;
  batch.forEach((photo, index) => Object.assign(photo, { statusUrl: url, index }));
  refresh();
  if (batch.some(onPage)) followJob(url, batch);
}

// Splits the photos into batches that each fit one request; a file over the per-image limit is
// not sent at all and fails alone.
function planBatches(list, limits) {
  const batches = [];
  let batch = [];
  let bytes = 0;
  list.forEach((photo) => {
    const { size } = photo.file;
    if (size > limits.max_image_bytes) {
      fail(photo, `This file is ${formatMegabytes(size)}, over the limit of `
        + `${formatMegabytes(limits.max_image_bytes)} per photo.`);
      return;
    }
    const cost = size + PART_OVERHEAD;
    if (batch.length === limits.max_images_per_job || (batch.length && bytes + cost > limits.max_request_bytes)) {
      batches.push(batch);
      batch = [];
      bytes = 0;
    }
    batch.push(photo);
    bytes += cost;
  });
  if (batch.length) batches.push(batch);
  return batches;
}

function formatMegabytes(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

async function send(list) {
  let limits;
  try {
    limits = await api.getLimits();
  } catch (error) {
    showMessage(`Could not upload: ${error.message}`);
    failUnfinished(list, error.message);
    refresh();
    return;
  }
  const batches = planBatches(list, limits);
  refresh();
  // One at a time: the next batch uploads while the earlier ones are being classified.
  for (const batch of batches) {
    const kept = batch.filter(onPage); // Clear may have removed them meanwhile
    if (kept.length) await submitBatch(kept);
  }
}

// A small copy of the photo for the card, and for storage so the card survives a reload.
async function makeThumbnail(file) {
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, THUMB_PX / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement('canvas');
    canvas.width = Math.max(1, Math.round(bitmap.width * scale));
    canvas.height = Math.max(1, Math.round(bitmap.height * scale));
    canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL('image/jpeg', 0.8);
  } catch {
    return ''; // not an image this browser can decode: the card says "No preview"
  }
}

function handleFiles(files) {
  if (files.length === 0) return;
  const added = files.map((file) => addPhoto(file.name, { file }));
  photos.unshift(...added); // newest selection on top, in the chosen order
  resultsList.prepend(...added.map((photo) => photo.card));
  added.forEach(async (photo) => {
    photo.thumb = await makeThumbnail(photo.file);
    showThumb(photo.card, photo.thumb);
    refresh();
  });
  refresh();
  send(added);
}

// ---------- The toolbar ----------

function retryFailed() {
  const failed = photos.filter((photo) => photo.status === 'failed');
  const retried = failed.filter((photo) => photo.file);
  if (retried.length < failed.length) {
    const lost = failed.length - retried.length;
    showMessage(`${lost} photo${lost === 1 ? ' was' : 's were'} chosen before the page was reloaded `
      + 'and cannot be sent again from here: please choose them again.');
  }
  retried.forEach((photo) => {
    Object.assign(photo, { result: undefined, error: undefined, seconds: undefined, statusUrl: undefined });
    setPhotoStatus(photo, 'queued');
    clearOutcome(photo.card);
  });
  refresh();
  if (retried.length) send(retried);
}

function clearAll() {
  polling.stopAll();
  photos = [];
  resultsList.replaceChildren();
  messages.replaceChildren();
  refresh();
}

function resultRows() {
  return photos.map((photo) => ({
    file: photo.name,
    status: photo.status,
    top3: photo.status === 'done' ? photo.result.top3 : [],
    confident: photo.status === 'done' ? photo.result.confident ?? null : null,
    error: photo.status === 'failed' ? photo.error : null,
    seconds: photo.seconds == null ? null : Math.round(photo.seconds * 10) / 10,
  }));
}

// ---------- Other ways in: paste, samples ----------

function pastedName(file, n) {
  const extension = file.type.split('/')[1]?.replace('jpeg', 'jpg') || 'png';
  const time = new Date().toTimeString().slice(0, 8).replaceAll(':', '-');
  return `pasted-${time}${n ? `-${n + 1}` : ''}.${extension}`;
}

function handlePaste(event) {
  const files = [...(event.clipboardData?.files ?? [])];
  if (files.length === 0) return; // text: not ours to handle
  event.preventDefault();
  const images = files.filter((file) => file.type.startsWith('image/'));
  if (images.length === 0) {
    showMessage('The clipboard holds no image to classify.');
    return;
  }
  // A pasted image is usually called "image.png"; a name with the time tells pastes apart.
  handleFiles(images.map((file, n) => new File([file], pastedName(file, n), { type: file.type })));
}

async function trySamples(button) {
  button.disabled = true;
  try {
    const files = await Promise.all(SAMPLES.map(async (name) => {
      const response = await fetch(`/static/samples/${name}`);
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      return new File([await response.blob()], name, { type: 'image/jpeg' });
    }));
    handleFiles(files);
  } catch (error) {
    showMessage(`Could not load the sample photos (${error.message}). Please try again.`);
  } finally {
    button.disabled = false;
  }
}

// ---------- Restoring the photos of an earlier load of this tab ----------

function restore() {
  photos = loadSaved().map(({ name, thumb, statusUrl, index, seconds, error }) => (
    addPhoto(name, { thumb: thumb ?? '', statusUrl, index, seconds, error })));
  resultsList.append(...photos.map((photo) => photo.card));
  const jobs = new Map();
  photos.forEach((photo) => {
    if (!photo.statusUrl) {
      fail(photo, photo.error || 'The page was reloaded before this photo was sent: please choose it again.');
      return;
    }
    if (!jobs.has(photo.statusUrl)) jobs.set(photo.statusUrl, []);
    jobs.get(photo.statusUrl)[photo.index] = photo;
  });
  jobs.forEach((jobPhotos, url) => followJob(url, jobPhotos));
  refresh();
}

// ---------- The footer and the list of sports ----------

async function showModel() {
  const info = $('model-info');
  try {
    const model = await api.getModel();
    const a = model.accuracy;
    const real = model.real_world_accuracy;
    info.textContent = `Model: ${model.name}, version ${model.version}`
      + (a ? ` · Accuracy on ${a.images} held-out photos: ${formatPercent(a.top1)} right first time,`
        + ` ${formatPercent(a.top3)} in its top 3` : '')
      + (real ? ` · on ${real.images} real-world photos: ${formatPercent(real.top1)} right first time` : '');
  } catch (error) {
    info.textContent = `Model details are unavailable right now (${error.message})`;
  }
}

async function loadClasses(details) {
  const list = $('classes-list');
  details.dataset.loaded = 'true';
  try {
    const { classes, display_names: names = {} } = await api.getClasses();
    list.replaceChildren(...classes.map((label) => el('li', '', names[label] || label)));
  } catch (error) {
    list.replaceChildren(el('li', 'classes-error', `Could not load the list: ${error.message}`));
    delete details.dataset.loaded; // try again next time it is opened
  }
}

// ---------- Wiring ----------

function setupDropZone() {
  const dropZone = $('drop-zone');
  const fileInput = $('file-input');
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
document.addEventListener('paste', handlePaste);
window.addEventListener('pagehide', saveNow); // a change in the last moments before a reload
$('samples-button').addEventListener('click', (event) => trySamples(event.currentTarget));
buttons.retry.addEventListener('click', retryFailed);
buttons.clear.addEventListener('click', clearAll);
buttons.csv.addEventListener('click', () => downloadCsv(resultRows()));
buttons.json.addEventListener('click', () => downloadJson(resultRows()));
$('classes-details').addEventListener('toggle', (event) => {
  const details = event.target;
  if (details.open && !details.dataset.loaded) loadClasses(details);
});
restore();
showModel();
