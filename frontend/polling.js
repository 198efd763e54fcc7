// Following jobs with the API's long poll, a few jobs at a time: a browser opens about 6
// connections per server, and uploads need some of them too.

import { getJob } from './api.js';

const MAX_LONG_POLLS = 2;
const MAX_POLL_FAILURES = 5; // ride out short network hiccups
const POLL_PAUSE_MS = 500; // so a server that answers a long poll at once is not asked in a tight loop

const following = [];
const waiting = [];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Calls onAnswer(job document) after each answer until it returns true (the job is finished),
// or onLost(error) once the job cannot be followed any more (the error's status is 404 when the
// server no longer knows the job).
export function follow(url, onAnswer, onLost) {
  waiting.push({ url, onAnswer, onLost, controller: new AbortController() });
  startWaiting();
}

export function stopAll() {
  waiting.length = 0;
  following.forEach((job) => job.controller.abort());
}

function startWaiting() {
  while (following.length < MAX_LONG_POLLS && waiting.length) {
    const job = waiting.shift();
    following.push(job);
    poll(job).finally(() => {
      following.splice(following.indexOf(job), 1);
      startWaiting();
    });
  }
}

async function poll(job) {
  const { signal } = job.controller;
  let failures = 0;
  while (!signal.aborted) {
    try {
      if (job.onAnswer(await getJob(job.url, signal))) return;
      failures = 0;
    } catch (error) {
      if (signal.aborted) return;
      failures += 1;
      if (error.status === 404 || failures >= MAX_POLL_FAILURES) {
        job.onLost(error);
        return;
      }
    }
    await sleep(POLL_PAUSE_MS);
  }
}
