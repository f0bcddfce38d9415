// What an agent can do to the chat on screen, as buttons in the conversation's header. Adding
// an action (transfer, for instance) is adding an entry here: `when` says if it applies to a
// chat, and either `run` acts at once or `confirm` first asks a question with choices. Labels
// are keys of the strings table.

export const actions = [
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
