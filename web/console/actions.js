// What an agent can do to the chat on screen, as buttons in the conversation's header. Adding
// an action is adding an entry here: `when` says if it applies to a chat, and either `run` acts
// at once, `confirm` first asks a question with choices, or `panel` opens a form (transfer.js)
// in the same place. Labels are keys of the strings table.

export const actions = [
  {
    id: 'transfer',
    label: 'action.transfer',
    when: (chat, desk) => !chat.ended && desk.online,
    panel: 'transfer',
  },
  {
    id: 'escalate',
    label: 'action.escalate',
    when: (chat, desk) => !chat.ended && desk.online,
    // One action for "get me a supervisor": the panel only asks for an optional note.
    panel: 'escalate',
  },
  {
    id: 'survey',
    label: 'action.survey',
    when: (chat, desk) => !chat.ended && desk.online,
    run: (desk, chat) => desk.requestSurvey(chat),
  },
  {
    id: 'close',
    label: 'action.close',
    when: (chat, desk) => !chat.ended && desk.online,
    // Closing cannot be undone, and the verdict is stored with the transcript: ask first.
    confirm: {
      question: 'closeQuestion',
      choices: [
        { id: 'resolved', label: 'closeResolved', primary: true, run: (desk, chat) => desk.close(chat, true) },
        { id: 'unresolved', label: 'closeUnresolved', run: (desk, chat) => desk.close(chat, false) },
      ],
    },
  },
];
