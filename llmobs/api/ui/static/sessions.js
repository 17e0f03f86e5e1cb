import { el } from "/ui/static/common.js";
import { cells, groupTotals } from "/ui/static/groups.js";

const link = (id) => el("a", { href: `/ui/sessions/${encodeURIComponent(id)}`, text: id });
link.columns = cells.sessions;
groupTotals("session_id", 7, "sessions", link);
