// Keeps the page's photos across a reload, for this tab only (sessionStorage): each photo's name,
// thumbnail and where its result is. The results themselves stay on the server and are asked
// for again on load.

const KEY = 'sport-classifier.photos';

export function loadSaved() {
  try {
    const records = JSON.parse(sessionStorage.getItem(KEY));
    return Array.isArray(records) ? records : [];
  } catch {
    return []; // unreadable: start afresh rather than not at all
  }
}

export function save(records) {
  try {
    sessionStorage.setItem(KEY, JSON.stringify(records));
  } catch {
    // Storage full: the results are worth more than their thumbnails.
    try {
      sessionStorage.setItem(KEY, JSON.stringify(records.map((record) => ({ ...record, thumb: '' }))));
    } catch {
      sessionStorage.removeItem(KEY);
    }
  }
}
