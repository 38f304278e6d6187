// The submit form. The server validates; its error (`error`, `code`) is shown under
// the field it names, or under the form.

import { $, toast } from './dom.js';
import { ApiError, send } from './api.js';

const FIELDS = ['command', 'image', 'timeout_seconds', 'max_attempts'];

export class SubmitForm {
  /** onSubmitted(jobId): the job is committed. */
  constructor({ onSubmitted }) {
    this.onSubmitted = onSubmitted;
    this.form = $('submit-form');
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.form.addEventListener('input', (event) => this.clearError(event.target.name));
  }

  body() {
    const body = { command: this.form.elements.command.value };
    const image = this.form.elements.image.value.trim();
    if (image) body.image = image;
    for (const name of ['timeout_seconds', 'max_attempts']) {
      const raw = this.form.elements[name].value.trim();
      if (raw) body[name] = /^-?\d+$/.test(raw) ? Number(raw) : raw; // the server says what is wrong
    }
    return body;
  }

  async submit() {
    const button = $('submit-button');
    this.clearError();
    button.disabled = true;
    try {
      const answer = await send('POST', '/api/jobs', this.body());
      toast(`Submitted ${answer.job_id.slice(0, 8)}`);
      this.form.elements.command.value = '';
      this.form.elements.command.focus();
      this.onSubmitted(answer.job_id);
    } catch (error) {
      this.showError(error);
    } finally {
      button.disabled = false;
    }
  }

  showError(error) {
    const message = error instanceof ApiError ? error.message : 'The node did not answer; try again.';
    const code = error instanceof ApiError && error.code ? ` (${error.code})` : '';
    const field = fieldOf(error);
    const target = field ? this.form.querySelector(`.field-error[data-for="${field}"]`) : $('submit-error');
    target.textContent = message + (field ? '' : code);
    if (field) target.closest('.field').classList.add('invalid');
  }

  clearError(name) {
    for (const node of this.form.querySelectorAll('.field-error')) {
      if (!name || node.dataset.for === name) {
        node.textContent = '';
        node.closest('.field').classList.remove('invalid');
      }
    }
    $('submit-error').textContent = '';
  }
}

/** The form field an error is about, when its code and message name one. */
function fieldOf(error) {
  if (!(error instanceof ApiError)) return null;
  if (error.code === 'PERMISSION_DENIED') return 'image';
  if (error.code !== 'INVALID_ARGUMENT') return null;
  const text = error.message.toLowerCase();
  if (text.includes('timeout')) return 'timeout_seconds';
  if (text.includes('max_attempts')) return 'max_attempts';
  if (text.includes('image')) return 'image';
  if (text.includes('command')) return 'command';
  return FIELDS.find((name) => text.includes(name)) || null;
}
