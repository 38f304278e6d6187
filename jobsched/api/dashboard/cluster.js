// The cluster card and the top bar: nodes, roles, liveness, the leader; transfer and
// drain, each after a confirmation.

import { $, el, fill, number, setText, toast } from './dom.js';
import { ApiError, send } from './api.js';
import { confirmAction } from './dialogs.js';

export class ClusterView {
  constructor() {
    this.state = null;
    $('transfer-button').addEventListener('click', () => this.transfer());
    $('drain-button').addEventListener('click', () => this.drain());
  }

  get leaderId() {
    return this.state ? this.state.leader_id : null;
  }

  update(state) {
    this.state = state;
    const self = state.nodes.find((node) => node.node_id === state.node_id);
    fill($('served-by'), 'served by ', el('b', { text: `node ${state.node_id}` }), ` · ${state.role}`);
    document.title = `jobsched · node ${state.node_id} (${state.role})`;
    setText($('sum-leader'), state.leader_id === null ? 'none' : `node ${state.leader_id}`);
    setText($('sum-term'), number(state.current_term));
    setText($('sum-commit'), number(state.commit_index));
    const counts = state.jobs || {};
    const active = (counts.pending || 0) + (counts.running || 0);
    const total = Object.values(counts).reduce((sum, n) => sum + n, 0);
    setText($('sum-jobs'), `${number(active)} active · ${number(total)}`);
    fill($('nodes'), state.nodes.map((node) => this.renderNode(node, state)));
    fill(
      $('cluster-facts'),
      fact('term', number(state.current_term)),
      fact('commit index', number(state.commit_index)),
      fact('applied', number(state.last_applied)),
      fact('log length', number(state.log_length)),
      fact('first index', number(state.first_log_index)),
      fact('quorum', state.has_quorum ? 'yes' : 'no'),
    );
    const drain = $('drain-button');
    drain.disabled = Boolean(self && self.draining);
    drain.textContent = self && self.draining ? 'Draining' : 'Drain this node…';
    $('transfer-button').disabled = state.leader_id === null || state.nodes.length < 2;
  }

  renderNode(node, state) {
    const isLeader = node.node_id === state.leader_id;
    const role = isLeader ? 'leader' : node.is_alive ? (node.role === 'leader' ? 'follower' : node.role) : 'down';
    const tags = [];
    if (node.node_id === state.node_id) tags.push(el('span', { class: 'tag', text: 'this page' }));
    if (node.draining) tags.push(el('span', { class: 'tag warn', text: 'draining' }));
    return el(
      'li',
      {
        class: `node${isLeader ? ' leader' : ''}${node.is_alive ? '' : ' down'}`,
        dataset: { nodeId: String(node.node_id), role, alive: String(node.is_alive) },
      },
      el('span', { class: `alive${node.is_alive ? ' up' : ''}`, title: node.is_alive ? 'alive' : 'not heard from' }),
      el('span', { class: 'name' }, `Node ${node.node_id}`, tags),
      el('span', { class: 'role', text: role }),
      el('span', { class: 'detail', text: `${node.address} · match ${number(node.match_index)}` }),
    );
  }

  async transfer() {
    const state = this.state;
    const select = el(
      'select',
      { id: 'transfer-target', 'aria-label': 'New leader' },
      el('option', { value: '0', text: 'The most up-to-date node' }),
      state.nodes
        .filter((node) => node.node_id !== state.leader_id && node.is_alive)
        .map((node) => el('option', { value: String(node.node_id), text: `Node ${node.node_id}` })),
    );
    const ok = await confirmAction({
      title: 'Transfer leadership',
      message: `Node ${state.leader_id} leads now. Hand leadership to:`,
      confirmLabel: 'Transfer',
      extra: select,
    });
    if (!ok) return;
    try {
      const answer = await send('POST', '/api/cluster/transfer-leader', { target_node_id: Number(select.value) });
      toast(answer.message || 'Leadership transferred');
    } catch (error) {
      toast(`Transfer failed: ${messageOf(error)}`, 'error');
    }
  }

  async drain() {
    const id = this.state.node_id;
    const ok = await confirmAction({
      title: `Drain node ${id}`,
      message:
        `Node ${id} will refuse new jobs and get no new work, wait for its running jobs, ` +
        'and hand leadership away if it leads. It stays draining until it restarts.',
      confirmLabel: 'Drain',
      danger: true,
    });
    if (!ok) return;
    toast(`Draining node ${id}…`);
    try {
      const answer = await send('POST', '/api/nodes/self/drain');
      toast(answer.message || 'Node drained');
    } catch (error) {
      toast(`Drain failed: ${messageOf(error)}`, 'error');
    }
  }
}

function fact(name, value) {
  return el('div', {}, el('dt', { text: name }), el('dd', { text: value }));
}

export function messageOf(error) {
  return error instanceof ApiError ? error.message : 'the node did not answer';
}
