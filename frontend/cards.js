// One card per photo: its thumbnail, name, status, time taken and top-3 (or why it failed).
// These functions only draw; the page's state lives in app.js.

const STATUS_TEXT = { queued: 'Queued', running: 'Classifying…', done: 'Done', failed: 'Failed' };

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function formatPercent(confidence) {
  const clamped = Math.min(Math.max(Number(confidence) || 0, 0), 1);
  return `${(clamped * 100).toFixed(1)}%`;
}

export const displayName = (prediction) => prediction.display_name || prediction.label;

export function createCard(name) {
  const card = el('li', 'result-card');
  card.dataset.filename = name;
  const title = el('p', 'card-filename', name);
  title.title = name;
  const time = el('span', 'card-time');
  time.title = 'From sending the photo to its result';
  const head = el('div', 'card-head');
  head.append(title, time, el('span', 'status-badge'));
  const body = el('div', 'card-body');
  body.append(head, el('div', 'card-outcome'));
  card.append(el('div', 'thumb'), body);
  setStatus(card, 'queued');
  return card;
}

// `url` is a data URL, or empty when the file could not be decoded for a preview.
export function showThumb(card, url) {
  const thumb = card.querySelector('.thumb');
  if (!url) {
    thumb.replaceChildren(el('div', 'thumb-placeholder', 'No preview'));
    return;
  }
  const img = el('img');
  img.alt = ''; // the file name is shown right next to it
  img.src = url;
  thumb.replaceChildren(img);
}

export function setStatus(card, status) {
  card.dataset.status = status;
  const badge = card.querySelector('.status-badge');
  badge.className = `status-badge status-${status}`;
  badge.textContent = STATUS_TEXT[status] ?? status;
}

export function showTime(card, seconds) {
  card.querySelector('.card-time').textContent = seconds == null ? '' : `${seconds.toFixed(1)} s`;
}

export function showPredictions(card, result) {
  const top3 = result.top3 ?? [];
  const outcome = card.querySelector('.card-outcome');
  outcome.replaceChildren(top3List(top3));
  // Results without the flag are shown as confident, as they always were.
  card.classList.toggle('is-unsure', result.confident === false);
  if (result.confident === false) outcome.prepend(el('p', 'not-sure', notSureText(top3)));
}

function notSureText(top3) {
  const names = top3.map(displayName);
  const options = names.length > 1 ? `${names.slice(0, -1).join(', ')} or ${names.at(-1)}` : names.join('');
  return `Not sure: maybe ${options}`;
}

function top3List(top3) {
  const list = el('ol', 'top3');
  top3.forEach((prediction, rank) => {
    const isBest = rank === 0;
    const row = el('li', isBest ? 'top3-row is-best' : 'top3-row');
    const bar = el('span', 'bar');
    bar.setAttribute('aria-hidden', 'true');
    const fill = el('span', 'bar-fill');
    fill.style.width = formatPercent(prediction.confidence);
    bar.append(fill);
    row.append(
      el('span', isBest ? 'top3-name top1-label' : 'top3-name', displayName(prediction)),
      el('span', 'top3-pct', formatPercent(prediction.confidence)),
      bar,
    );
    list.append(row);
  });
  return list;
}

export function showError(card, message) {
  card.classList.remove('is-unsure');
  card.querySelector('.card-outcome').replaceChildren(el('p', 'card-error', message));
}

export function clearOutcome(card) {
  card.classList.remove('is-unsure');
  card.querySelector('.card-outcome').replaceChildren();
  showTime(card, null);
}
