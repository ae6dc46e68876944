// organise.js — the organising controls of an experiment's page and a study's: its tags and
// note shown under the title, and a form to rename it and edit its tags and note; Archive,
// and for an experiment Delete (PATCH and DELETE /api/experiments/{id} and
// /api/studies/{id}, docs/api.md "Organising"). The page hands it each new copy of the thing;
// what the user is typing is never overwritten by one.

import {h, clear, confirmButton, ACTIVE} from './dom.js';

const tagList = (text) => text.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);

// patch(changes) → the thing as the server now has it; remove() deletes it (null: no
// Delete button); done() after a deletion; onChanged(thing) after a change; onError(message).
export function organiseControls({patch, remove = null, done = null, onChanged, onError}) {
  const shown = h('div', {class: 'organise-shown'});
  const nameInput = h('input', {type: 'text', name: 'rename', 'aria-label': 'name', maxlength: '127'});
  const tagsInput = h('input', {type: 'text', name: 'tags', 'aria-label': 'tags, separated by commas or spaces',
    placeholder: 'baseline, mlp'});
  const noteInput = h('textarea', {name: 'note', rows: '3', 'aria-label': 'note', placeholder: 'what this run is for'});
  const status = h('span', {class: 'muted organise-status', 'aria-live': 'polite'});
  let experiment = null;

  async function change(changes, done) {
    try {
      const changed = await patch(changes);
      status.textContent = done;
      onChanged(changed);
    } catch (e) {
      status.textContent = '';
      onError(e.message);
    }
  }

  const form = h('form', {class: 'organise-form', onsubmit: (event) => {
    event.preventDefault();
    change({name: nameInput.value.trim(), tags: tagList(tagsInput.value), note: noteInput.value}, 'saved');
  }},
  h('label', {}, 'Name ', nameInput), h('label', {}, 'Tags ', tagsInput), h('label', {}, 'Note ', noteInput),
  h('div', {class: 'organise-buttons'}, h('button', {type: 'submit', dataset: {action: 'save'}}, 'Save'), status));
  const archiveButton = h('button', {type: 'button', class: 'secondary', dataset: {action: 'archive'}, onclick: () =>
    change({archived: !(experiment && experiment.archived_at)}, experiment && experiment.archived_at ? 'unarchived'
      : 'archived')});
  const deleteButton = remove ? confirmButton('Delete', 'Really delete? Its curves and checkpoints go too', async () => {
    try {
      await remove();
      if (done) done();
    } catch (e) {
      onError(e.message);
    }
  }, {class: 'danger', dataset: {action: 'delete'}}) : null;
  const panel = h('details', {class: 'organise'}, h('summary', {}, 'Name, tags, note'), form);

  // A new copy of the run: the shown tags and note, and the form's fields unless being edited.
  function update(next) {
    experiment = next;
    const key = JSON.stringify([next.name, next.tags, next.note, next.archived_at, next.status]);
    if (shown.dataset.key === key) return;
    shown.dataset.key = key;
    clear(shown, (next.tags || []).map((t) => h('span', {class: 'tag'}, t)),
      next.archived_at ? h('span', {class: 'tag archived'}, 'archived') : null,
      next.note ? h('p', {class: 'note-text'}, next.note) : null);
    if (!form.contains(document.activeElement)) {
      nameInput.value = next.name || '';
      tagsInput.value = (next.tags || []).join(', ');
      noteInput.value = next.note || '';
    }
    archiveButton.textContent = next.archived_at ? 'Unarchive' : 'Archive';
    if (deleteButton) {
      deleteButton.hidden = next.status === 'running';
      deleteButton.title = ACTIVE.has(next.status) ? 'deleting a waiting run also takes it off the queue' : '';
    }
  }

  return {shown, panel, buttons: [archiveButton, deleteButton], update};
}
