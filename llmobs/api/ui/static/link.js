// The one-time sign-in link carries its token in the URL fragment (#token=...), which browsers
// never send: copy it into the form, and drop it from the address bar and history.
const match = /(?:^#|&)token=([A-Za-z0-9_-]{1,100})/.exec(location.hash);
const button = document.getElementById("use-link");
if (match) {
  document.getElementById("token").value = match[1];
  history.replaceState(null, "", location.pathname);
} else {
  button.disabled = true;
  button.after(Object.assign(document.createElement("p"), { className: "error", textContent: "This link has no token: run `llmobs ui` again." }));
}
