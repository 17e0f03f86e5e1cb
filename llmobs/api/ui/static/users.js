import { el } from "/ui/static/common.js";
import { cells, groupTotals } from "/ui/static/groups.js";

const link = (id) => el("a", { href: `/ui/?range=30d&user_id=${encodeURIComponent(id)}`, text: id });
link.columns = cells.users;
groupTotals("user_id", 30, "users", link);
