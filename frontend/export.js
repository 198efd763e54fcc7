// The results as files to download: CSV for spreadsheets, JSON for programs.

// The CLI's columns (sportclf/output.py), then the seconds each photo took.
const CSV_COLUMNS = ['file', 'status', 'top1', 'p1', 'top2', 'p2', 'top3', 'p3', 'confident', 'error', 'seconds'];
const CONFIDENT_TEXT = { true: 'yes', false: 'no' };

function csvField(value) {
  const text = value == null ? '' : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function csvLine(row) {
  const top3 = row.top3.flatMap((p) => [p.display_name || p.label, p.confidence.toFixed(4)]);
  while (top3.length < 6) top3.push('');
  return [row.file, row.status, ...top3, CONFIDENT_TEXT[row.confident], row.error, row.seconds].map(csvField).join(',');
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // The download has started from the click; the URL can go once this task is over.
  setTimeout(() => URL.revokeObjectURL(url));
}

// `rows`: [{file, status, top3: [{label, display_name, confidence}], confident, error, seconds}]
export function downloadCsv(rows) {
  const lines = [CSV_COLUMNS.join(','), ...rows.map(csvLine)];
  download('sport-results.csv', 'text/csv', `${lines.join('\r\n')}\r\n`);
}

export function downloadJson(rows) {
  download('sport-results.json', 'application/json', `${JSON.stringify(rows, null, 2)}\n`);
}
