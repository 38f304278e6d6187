// The dashboard: wires the views to the live event stream of this node.

import { $, setText, refreshTimes } from './dom.js';
import { getJson, setTokenPrompt } from './api.js';
import { askForToken } from './dialogs.js';
import { LiveStream } from './events.js';
import { ClusterView } from './cluster.js';
import { JobsView } from './jobs.js';
import { JobDetail } from './detail.js';
import { SubmitForm } from './submit.js';
import { RaftLogView } from './raftlog.js';
import { ThroughputChart } from './chart.js';

setTokenPrompt(askForToken);

const cluster = new ClusterView();
const detail = new JobDetail();
const chart = new ThroughputChart();
const log = new RaftLogView();
const stream = new LiveStream({ onEvent, onState });
const jobs = new JobsView({
  onOpen: (jobId) => detail.open(jobId),
  onSnapshot: (applied, reset) => stream.noteSnapshot(applied, reset),
});
new SubmitForm({ onSubmitted: () => {} });

function onEvent({ type, id, data }) {
  if (type === 'job') {
    jobs.onJob(data, id);
    detail.onJob(data, id);
    chart.onJob(data);
  } else if (type === 'cluster') {
    showCluster(data);
  } else if (type === 'reset') {
    jobs.load(true);
    log.goLatest();
  }
}

function showCluster(state) {
  cluster.update(state);
  jobs.setCounts(state.jobs);
  jobs.setWorkers(state.nodes.map((node) => node.node_id));
  log.onCluster(state);
}

function onState(state, detailText) {
  const live = $('live');
  live.dataset.state = state;
  setText($('live-label'), state === 'live' ? 'live' : 'reconnecting…');
  live.title = state === 'live' ? 'Live event stream' : `Reconnecting: ${detailText || ''}`;
  if (state !== 'live') pollCluster();
}

/** While the stream is away, read the cluster state once per retry. */
async function pollCluster() {
  try {
    const { data } = await getJson('/api/cluster');
    showCluster(data);
  } catch {
    // the node is away; the stream's retries tell the user
  }
}

stream.run();
jobs.load();
log.load();
chart.draw();
setInterval(() => {
  chart.draw();
  jobs.tick();
}, 1000);
setInterval(() => refreshTimes(), 5000);
