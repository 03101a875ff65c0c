// groups: what the chat page shows of a group besides its messages: the
// line each membership change leaves in the timeline, who has read a
// message, the member list with its admin's controls, and the form that
// creates a group. The page (app.js) owns the state and the connection;
// this draws and hands the person's actions back to it.

import { $, h, paintAvatar } from './dom.js';
import { validId } from './sdk/shard.js';

/** who is a person as the page's user reads it: "You" or the name. */
function who(user, me, capital) {
  if (user !== me) return user;
  return capital ? 'You' : 'you';
}

/** eventText is the timeline's line for a membership change (SPEC 8). */
export function eventText(ev, me) {
  const by = who(ev.from, me, true);
  switch (ev.event) {
    case 'created': return `${by} created the group`;
    case 'added': return `${by} added ${who(ev.user, me)}`;
    case 'removed': return `${by} removed ${who(ev.user, me)}`;
    case 'left': {
      const text = `${who(ev.user || ev.from, me, true)} left`;
      if (!ev.admin) return text;
      return ev.admin === me ? `${text} · you are now an admin` : `${text} · ${ev.admin} is now an admin`;
    }
    default: return `${by} changed the group`;
  }
}

/**
 * readText says who has read one of the user's group messages: readers
 * are the other members who have, of others (the number of other members,
 * 0 when not known).
 */
export function readText(readers, others) {
  if (others > 0 && readers.length >= others) return others === 1 ? `read by ${readers[0]}` : 'read by everyone';
  if (readers.length === 1) return `read by ${readers[0]}`;
  if (readers.length === 2) return `read by ${readers[0]} and ${readers[1]}`;
  return `read by ${readers.length}`;
}

/** parseMembers reads "bob, carol dave" into ids, and the first that is not one. */
export function parseMembers(text, me) {
  const users = [];
  for (const name of text.split(/[\s,;]+/).map((s) => s.replace(/^@/, '')).filter(Boolean)) {
    if (!validId(name)) return { users, bad: name };
    if (name !== me && !users.includes(name)) users.push(name);
  }
  return { users, bad: '' };
}

/**
 * renderMembers draws a group's members into the member panel: each with
 * its avatar, "admin" and "you"; an admin gets a Remove button by each
 * other member, and the form to add one.
 */
export function renderMembers(c, me, actions) {
  const list = $('members-list');
  list.replaceChildren();
  const members = c.members ? [...c.members.entries()] : [];
  // Admins first, then by name.
  members.sort(([a, x], [b, y]) => (y.admin - x.admin) || (a < b ? -1 : a > b ? 1 : 0));
  $('members-count').textContent = c.members ? String(members.length) : '';
  for (const [user, m] of members) {
    const li = h('li', 'member');
    li.dataset.testid = 'member';
    li.dataset.user = user;
    li.dataset.admin = String(!!m.admin);
    const av = h('span', 'avatar small');
    paintAvatar(av, user, 'dm');
    const name = h('span', 'member-name', user === me ? `${user} (you)` : user);
    li.append(av, name);
    if (m.admin) li.append(h('span', 'tag', 'admin'));
    if (c.admin && user !== me && !c.gone) {
      const rm = h('button', 'ghost small', 'Remove');
      rm.type = 'button';
      rm.dataset.testid = 'member-remove';
      rm.setAttribute('aria-label', `Remove ${user} from the group`);
      rm.addEventListener('click', () => actions.remove(user));
      li.append(rm);
    }
    list.append(li);
  }
  if (!c.members) list.append(h('li', 'member muted', c.membersError || 'Loading members…'));
  $('member-add').hidden = !c.admin || !!c.gone;
  $('group-leave').hidden = !!c.gone;
}

/**
 * GroupDialog is the "New group" form: a name and the members to add. It
 * checks both before create(name, users) runs, and shows what the server
 * refused.
 */
export class GroupDialog {
  constructor(me, create) {
    this.me = me;
    this.create = create;
    this.el = $('group-dialog');
    $('group-form').addEventListener('submit', (e) => {
      e.preventDefault();
      this.submit();
    });
    $('group-cancel').addEventListener('click', () => this.el.close());
  }

  open() {
    $('group-name').value = '';
    $('group-members').value = '';
    this.error('');
    this.el.showModal();
    $('group-name').focus();
  }

  error(text) {
    $('group-error').textContent = text;
  }

  async submit() {
    const name = $('group-name').value.trim();
    if (!validId(name)) {
      this.error(name ? `“${name}” is not a valid group name: use 1–64 letters, digits or _ . @ -` : 'Give the group a name.');
      $('group-name').focus();
      return;
    }
    const { users, bad } = parseMembers($('group-members').value, this.me());
    if (bad) {
      this.error(`“${bad}” is not a valid name.`);
      $('group-members').focus();
      return;
    }
    const go = $('group-create');
    go.disabled = true;
    try {
      await this.create(name, users);
      this.el.close();
    } catch (err) {
      this.error(err.code === 'conflict' ? `A group called “${name}” exists already: pick another name.` : `Could not create it: ${err.message}`);
    } finally {
      go.disabled = false;
    }
  }
}
