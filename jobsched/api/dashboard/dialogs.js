// Modal questions: a confirmation before anything that changes the cluster, and the
// token question. Built on <dialog>; nothing here blocks the page (no window.confirm).

import { $, fill } from './dom.js';

/** Resolves to true (confirmed) or false. `extra` is an optional element (a select). */
export function confirmAction({ title, message, confirmLabel = 'Confirm', danger = false, extra = null }) {
  const dialog = $('confirm-dialog');
  $('confirm-title').textContent = title;
  $('confirm-message').textContent = message;
  fill($('confirm-extra'), extra);
  const yes = $('confirm-yes');
  yes.textContent = confirmLabel;
  yes.className = danger ? 'danger' : 'primary';
  return new Promise((resolve) => {
    let answer = false;
    const onSubmit = (event) => {
      event.preventDefault();
      answer = true;
      dialog.close();
    };
    const onNo = () => dialog.close();
    const onClose = () => {
      $('confirm-form').removeEventListener('submit', onSubmit);
      $('confirm-no').removeEventListener('click', onNo);
      dialog.removeEventListener('close', onClose);
      resolve(answer);
    };
    $('confirm-form').addEventListener('submit', onSubmit);
    $('confirm-no').addEventListener('click', onNo);
    dialog.addEventListener('close', onClose);
    dialog.showModal();
    yes.focus();
  });
}

/** Resolves to the token typed, or null when the user says "not now". */
export function askForToken(reason) {
  const dialog = $('token-dialog');
  const input = $('token-input');
  $('token-error').textContent = reason || '';
  input.value = '';
  return new Promise((resolve) => {
    let answer = null;
    const onSubmit = (event) => {
      event.preventDefault();
      answer = input.value.trim() || null;
      dialog.close();
    };
    const onCancel = () => dialog.close();
    const onClose = () => {
      $('token-form').removeEventListener('submit', onSubmit);
      $('token-cancel').removeEventListener('click', onCancel);
      dialog.removeEventListener('close', onClose);
      resolve(answer);
    };
    $('token-form').addEventListener('submit', onSubmit);
    $('token-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('close', onClose);
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
}
