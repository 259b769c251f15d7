// facegate web console: plain JS, no build step, no dependencies.
// Talks only to the gateway's own API (openapi.json); every piece of server
// data reaches the page through textContent or a URL attribute, never innerHTML.
'use strict';

// ---------------------------------------------------------------------------
// Labels: the one dictionary. HTML elements name a key with data-i18n.
const DICT = {
  en: {
    app_title: 'facegate console',
    lang_other: '中文',
    sign_in_title: 'Sign in',
    token_label: 'Access token',
    token_hint: 'Paste a token made with “facegate token create”. It is kept in this browser tab only.',
    sign_in: 'Sign in',
    sign_out: 'Sign out',
    signed_out_expired: 'The token is no longer accepted; sign in again.',
    bad_token: 'This token is not accepted.',
    token_empty: 'Paste a token first.',
    role_viewer: 'viewer',
    role_enroller: 'enroller',
    role_admin: 'admin',
    nav_enrol: 'Enrol',
    nav_owners: 'Owners',
    nav_alerts: 'Live alerts',
    nav_events: 'Events',
    nav_cameras: 'Cameras',
    enrol_title: 'Enrol an owner',
    f_id: 'Owner ID',
    f_name: 'Name',
    f_building: 'Building',
    f_unit: 'Unit',
    f_grid: 'Grid code',
    minor_legend: 'Minor',
    f_minor: 'Under 14 (a guardian consents)',
    f_guardian_name: 'Guardian name',
    f_guardian_relation: 'Relation to the child',
    consent_legend: 'Consent to face recognition',
    f_consent_method: 'How consent was given',
    cm_written: 'Written',
    cm_electronic: 'Electronic',
    cm_verbal_recorded: 'Verbal (recorded)',
    f_consent_taken_by: 'Consent taken by (staff)',
    f_consent_given_at: 'Consent given at (blank = now)',
    f_consent: 'The owner (or guardian) has given separate, explicit consent to the use of their face for entry.',
    consent_note: 'Face recognition is optional: the access card, QR code and PIN keep working, and face is never the only way in. Consent can be withdrawn at any time.',
    photos_legend: 'Face photos',
    f_photos: 'Photo files (one face each)',
    f_camera: 'Or from camera',
    take_snapshot: 'Take snapshot',
    remove: 'Remove',
    snapshot_from: 'Snapshot from {0}',
    enrol_submit: 'Enrol',
    enrolling: 'Enrolling…',
    enrolled: 'Enrolled {0} ({1}) with {2} face template(s).',
    need_id_name: 'Owner ID and name are required.',
    need_consent: 'Tick the consent box: the owner must agree to face recognition.',
    need_guardian: 'A child under 14 needs the guardian’s name.',
    need_photo: 'Add at least one photo (file or camera snapshot).',
    no_cameras: 'no cameras',
    owners_title: 'Owners',
    search: 'Search (ID, name, building, unit)',
    status: 'Status',
    any: 'any',
    st_active: 'active',
    st_suspended: 'suspended',
    page_size: 'Per page',
    search_btn: 'Search',
    templates: 'Faces',
    created: 'Enrolled',
    actions: 'Actions',
    suspend: 'Suspend',
    activate: 'Activate',
    erase: 'Erase',
    minor_tag: 'minor',
    confirm_erase: 'Erase owner {0} ({1})? Their face templates, photos and consent records are deleted. This cannot be undone.',
    erased: 'Owner {0} erased.',
    prev: '← Previous',
    next: 'Next →',
    owners_range: '{0}–{1} of {2}',
    owners_none: 'No owners match.',
    alerts_title: 'Live alerts',
    alerts_only: 'Alerts only',
    clear: 'Clear',
    feed_empty: 'Waiting for events…',
    feed_connecting: 'Connecting…',
    feed_open: 'Live',
    feed_error: 'Connection lost, reconnecting…',
    feed_closed: 'Not connected',
    events_title: 'Event browser',
    since: 'From',
    until: 'Until',
    camera: 'Camera',
    kind: 'Kind',
    owner_or_stranger: 'Owner or stranger ID',
    time: 'Time',
    who: 'Who',
    score: 'Score',
    face: 'Face',
    events_page: 'Page {0} ({1} events)',
    events_none: 'No events match.',
    scene: 'Scene snapshot',
    no_snapshot: 'This event has no snapshot.',
    close: 'Close',
    cameras_title: 'Cameras',
    cameras_hint: 'Refreshed every 5 seconds.',
    role: 'Role',
    state: 'State',
    fps_in: 'FPS in',
    fps_taken: 'FPS analysed',
    drops: 'Dropped frames',
    last_frame: 'Last frame',
    last_error: 'Last error',
    seconds_ago: '{0} s ago',
    cr_gate: 'gate',
    cr_patrol: 'patrol',
    cs_starting: 'starting',
    cs_online: 'online',
    cs_offline: 'offline',
    cs_reconnecting: 'reconnecting',
    cs_stopped: 'stopped',
    k_owner_pass: 'Owner pass',
    k_stranger: 'Stranger',
    k_watchlist: 'Watch list',
    k_spoof: 'Spoof attempt',
    k_loitering: 'Loitering',
    k_undecided: 'Undecided',
    repeat: 'repeat',
    k_camera_offline: 'Camera offline',
    k_camera_online: 'Camera online',
    stranger_label: 'stranger {0}',
    priority: 'priority {0}',
    err_network: 'Cannot reach the gateway: {0}',
    err_http: 'Error {0}: {1}',
    err_http_code: 'Error {0} ({1}): {2}',
    err_forbidden: 'Your role may not do this.',
    nav_watchlist: 'Watch list',
    nav_search: 'Search by photo',
    watchlist_title: 'Watch list',
    watchlist_hint: 'People the cameras look out for (missing persons, barred visitors). A match raises a watch-list alert.',
    watch_add_legend: 'Add a person',
    f_reason: 'Reason',
    f_priority: 'Priority',
    pr_low: 'low',
    pr_normal: 'normal',
    pr_high: 'high',
    pr_critical: 'critical',
    f_expires: 'Expires (blank = never)',
    f_expires_col: 'Expires',
    watch_submit: 'Add to watch list',
    watch_adding: 'Adding…',
    watch_added: 'Added {0} to the watch list with {1} face template(s).',
    need_name_reason: 'Name and reason are required.',
    never: 'never',
    expired_tag: 'expired',
    watch_none: 'The watch list is empty.',
    confirm_watch_remove: 'Remove {0} ({1}) from the watch list? Their face templates are deleted.',
    watch_removed: '{0} removed from the watch list.',
    search_title: 'Search by photo',
    search_note: 'Finds where this face was seen. Every search is recorded in the audit log, and only events within the snapshot retention period are searched.',
    f_search_photo: 'Face photo (one face)',
    f_limit: 'Max. results (1–200, blank = 20)',
    f_min_score: 'Min. score (−1…1, blank = match threshold)',
    need_search_photo: 'Choose a photo first.',
    searching: 'Searching…',
    searched: 'Searched {0} faces: {1} hit(s) at score ≥ {2}.',
    no_hits: 'No event face matches this photo.',
  },
  zh: {
    app_title: 'facegate 管理台',
    lang_other: 'English',
    sign_in_title: '登录',
    token_label: '访问令牌',
    token_hint: '粘贴用 “facegate token create” 生成的令牌。令牌只保存在本浏览器标签页中。',
    sign_in: '登录',
    sign_out: '退出',
    signed_out_expired: '令牌已失效，请重新登录。',
    bad_token: '令牌无效。',
    token_empty: '请先粘贴令牌。',
    role_viewer: '查看员',
    role_enroller: '登记员',
    role_admin: '管理员',
    nav_enrol: '登记',
    nav_owners: '业主',
    nav_alerts: '实时告警',
    nav_events: '事件',
    nav_cameras: '摄像机',
    enrol_title: '登记业主',
    f_id: '业主编号',
    f_name: '姓名',
    f_building: '楼栋',
    f_unit: '单元',
    f_grid: '网格编码',
    minor_legend: '未成年人',
    f_minor: '未满 14 周岁（由监护人同意）',
    f_guardian_name: '监护人姓名',
    f_guardian_relation: '与未成年人关系',
    consent_legend: '人脸识别单独同意',
    f_consent_method: '同意方式',
    cm_written: '书面',
    cm_electronic: '电子',
    cm_verbal_recorded: '口头（已录音）',
    f_consent_taken_by: '经办人',
    f_consent_given_at: '同意时间（留空为现在）',
    f_consent: '业主（或监护人）已单独、明确同意使用其人脸通行。',
    consent_note: '人脸识别为自愿选项：门禁卡、二维码和密码照常可用，人脸绝不是唯一的通行方式。同意可随时撤回。',
    photos_legend: '人脸照片',
    f_photos: '照片文件（每张一张人脸）',
    f_camera: '或从摄像机抓拍',
    take_snapshot: '抓拍',
    remove: '移除',
    snapshot_from: '来自 {0} 的抓拍',
    enrol_submit: '登记',
    enrolling: '正在登记…',
    enrolled: '已登记 {0}（{1}），人脸模板 {2} 个。',
    need_id_name: '业主编号和姓名为必填项。',
    need_consent: '请勾选同意：业主须同意人脸识别。',
    need_guardian: '未满 14 周岁须填写监护人姓名。',
    need_photo: '请至少添加一张照片（文件或抓拍）。',
    no_cameras: '无摄像机',
    owners_title: '业主',
    search: '搜索（编号、姓名、楼栋、单元）',
    status: '状态',
    any: '全部',
    st_active: '正常',
    st_suspended: '已停用',
    page_size: '每页',
    search_btn: '查询',
    templates: '人脸数',
    created: '登记时间',
    actions: '操作',
    suspend: '停用',
    activate: '启用',
    erase: '删除',
    minor_tag: '未成年',
    confirm_erase: '删除业主 {0}（{1}）？其人脸模板、照片和同意记录将被删除，且无法恢复。',
    erased: '业主 {0} 已删除。',
    prev: '← 上一页',
    next: '下一页 →',
    owners_range: '第 {0}–{1} 条，共 {2} 条',
    owners_none: '没有符合条件的业主。',
    alerts_title: '实时告警',
    alerts_only: '仅告警',
    clear: '清空',
    feed_empty: '等待事件…',
    feed_connecting: '正在连接…',
    feed_open: '实时',
    feed_error: '连接中断，正在重连…',
    feed_closed: '未连接',
    events_title: '事件查询',
    since: '开始时间',
    until: '结束时间',
    camera: '摄像机',
    kind: '类型',
    owner_or_stranger: '业主或陌生人编号',
    time: '时间',
    who: '人员',
    score: '相似度',
    face: '人脸',
    events_page: '第 {0} 页（{1} 条）',
    events_none: '没有符合条件的事件。',
    scene: '现场抓拍',
    no_snapshot: '该事件没有抓拍。',
    close: '关闭',
    cameras_title: '摄像机',
    cameras_hint: '每 5 秒刷新。',
    role: '用途',
    state: '状态',
    fps_in: '输入帧率',
    fps_taken: '分析帧率',
    drops: '丢帧',
    last_frame: '最新画面',
    last_error: '最近错误',
    seconds_ago: '{0} 秒前',
    cr_gate: '门口',
    cr_patrol: '巡查',
    cs_starting: '启动中',
    cs_online: '在线',
    cs_offline: '离线',
    cs_reconnecting: '重连中',
    cs_stopped: '已停止',
    k_owner_pass: '业主通行',
    k_stranger: '陌生人',
    k_watchlist: '布控命中',
    k_spoof: '假体攻击',
    k_loitering: '徘徊',
    k_undecided: '未判定',
    repeat: '重复',
    k_camera_offline: '摄像机离线',
    k_camera_online: '摄像机上线',
    stranger_label: '陌生人 {0}',
    priority: '优先级 {0}',
    err_network: '无法连接网关：{0}',
    err_http: '错误 {0}：{1}',
    err_http_code: '错误 {0}（{1}）：{2}',
    err_forbidden: '当前角色无此权限。',
    nav_watchlist: '布控名单',
    nav_search: '以脸搜脸',
    watchlist_title: '布控名单（寻人）',
    watchlist_hint: '摄像机重点关注的人员（走失老人、禁止入内人员等）。识别命中即产生布控告警。',
    watch_add_legend: '添加人员',
    f_reason: '原因',
    f_priority: '优先级',
    pr_low: '低',
    pr_normal: '普通',
    pr_high: '高',
    pr_critical: '紧急',
    f_expires: '到期时间（留空为永久）',
    f_expires_col: '到期',
    watch_submit: '加入布控',
    watch_adding: '正在添加…',
    watch_added: '已将 {0} 加入布控，人脸模板 {1} 个。',
    need_name_reason: '姓名和原因为必填项。',
    never: '永久',
    expired_tag: '已过期',
    watch_none: '布控名单为空。',
    confirm_watch_remove: '将 {0}（{1}）移出布控名单？其人脸模板将被删除。',
    watch_removed: '已将 {0} 移出布控名单。',
    search_title: '以脸搜脸',
    search_note: '查找此人脸出现过的位置。每次搜索都会记入审计日志，且只搜索抓拍保存期内的事件。',
    f_search_photo: '人脸照片（一张人脸）',
    f_limit: '最多结果数（1–200，留空为 20）',
    f_min_score: '最低相似度（−1…1，留空为识别阈值）',
    need_search_photo: '请先选择照片。',
    searching: '正在搜索…',
    searched: '已比对 {0} 张人脸：相似度 ≥ {2} 的结果 {1} 条。',
    no_hits: '没有与此照片匹配的事件人脸。',
  },
};

// Written by the server from the one declaration of event kinds
// (gateway/events.rs): every kind, and those flagged here as alerts.
const EVENT_KINDS = /*EVENT_KINDS*/[];
const ALERT_KINDS = new Set(/*ALERT_KINDS*/[]);
// A repeat (same decision, same person, within the cooldown) is recorded but is not an alert.
const isAlert = (ev) => ALERT_KINDS.has(ev.kind) && !ev.repeat;
const ROLE_RANK = { viewer: 1, enroller: 2, admin: 3 };
const TOKEN_KEY = 'facegate.token';
const LANG_KEY = 'facegate.lang';
const FEED_MAX = 200;
const CAMERA_POLL_MS = 5000;

const state = {
  lang: pickLang(),
  token: null,
  me: null,
  tab: null,
  owners: { q: '', status: '', limit: 50, offset: 0, page: null, message: null },
  events: { query: {}, limit: 50, offset: 0, page: null },
  cameras: [],
  feed: { source: null, status: 'closed', items: new Map(), retryTimer: null, retryMs: 1000, unread: 0 },
  watch: { list: null, message: null },
  search: { result: null },
  snapshots: [], // camera snapshots for the enrol form: {blob, url, camera}
  cameraTimer: null,
};

function pickLang() {
  const saved = localStorage.getItem(LANG_KEY);
  if (saved === 'en' || saved === 'zh') return saved;
  return (navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

/** The label for key in the current language, with {0}, {1}… filled in. */
function t(key, ...args) {
  const s = DICT[state.lang][key] ?? DICT.en[key] ?? key;
  return s.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)] ?? ''));
}

// ---------------------------------------------------------------------------
// DOM helpers
const $ = (testid, root = document) => root.querySelector(`[data-testid="${testid}"]`);

/** A new element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function showMsg(node, text, kind = 'error') {
  node.textContent = text;
  node.dataset.state = kind;
  node.hidden = !text;
}

function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(state.lang === 'zh' ? 'zh-CN' : 'en-GB', { hour12: false });
}

function fmtNum(x, digits = 2) {
  return typeof x === 'number' && Number.isFinite(x) ? x.toFixed(digits) : '';
}

/** datetime-local value (local time) → RFC 3339 UTC, or '' when empty. */
function localToRfc3339(value) {
  if (!value) return '';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return '';
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// ---------------------------------------------------------------------------
// API
class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

/** fetch with the bearer token; JSON bodies decoded; errors as ApiError. */
async function api(path, { method = 'GET', body, query, raw = false, token = state.token } = {}) {
  let url = path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== '' && v !== null && v !== undefined) qs.set(k, String(v));
    }
    const s = qs.toString();
    if (s) url += '?' + s;
  }
  const headers = { Accept: raw ? '*/*' : 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  let init = { method, headers };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, 'network', t('err_network', e.message));
  }
  if (!res.ok) {
    let code = 'http_' + res.status;
    let message = res.statusText || String(res.status);
    let errBody = null;
    try {
      errBody = await res.json();
      if (errBody && errBody.error) {
        code = errBody.error.code || code;
        message = errBody.error.message || message;
      }
    } catch (_) { /* not JSON */ }
    const err = new ApiError(res.status, code, message, errBody);
    // A token that stopped working (revoked, server restarted with another db) signs us out.
    if (res.status === 401 && token && state.token === token && path !== '/api/v1/me') {
      signOut(t('signed_out_expired'));
    }
    throw err;
  }
  if (raw) return res.blob();
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

function errText(e) {
  if (!(e instanceof ApiError)) return String(e && e.message ? e.message : e);
  if (e.status === 0) return e.message;
  if (e.status === 403 && !e.body) return t('err_forbidden');
  // The server's {"error": {"code", "message"}} is shown in full.
  if (e.body && e.body.error && e.body.error.code) return t('err_http_code', e.status, e.body.error.code, e.message);
  return t('err_http', e.status, e.message);
}

/** A GET URL that carries the token in the query (for <img> and EventSource). */
function tokenUrl(path, extra = {}) {
  const qs = new URLSearchParams({ ...extra, access_token: state.token });
  return path + '?' + qs.toString();
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------------------
// Language
function applyLang() {
  document.documentElement.lang = state.lang === 'zh' ? 'zh-CN' : 'en';
  document.title = t('app_title');
  for (const node of document.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  $('lang-toggle').textContent = t('lang_other');
  $('lang-toggle').setAttribute('aria-label', state.lang === 'zh' ? 'Switch to English' : '切换到中文');
  fillKindSelect();
  renderWho();
  renderOwners();
  renderFeed();
  renderEvents();
  renderCameras();
  renderFeedState();
  renderPreviews();
  renderWatch();
  renderSearch();
}

function toggleLang() {
  state.lang = state.lang === 'zh' ? 'en' : 'zh';
  localStorage.setItem(LANG_KEY, state.lang);
  applyLang();
}

function fillKindSelect() {
  const sel = $('events-kind');
  const keep = sel.value;
  sel.replaceChildren(el('option', { value: '', text: t('any') }));
  for (const k of EVENT_KINDS) sel.append(el('option', { value: k, text: t('k_' + k) }));
  sel.value = keep;
}

// ---------------------------------------------------------------------------
// Sign in / out and roles
function can(role) {
  return !!state.me && (ROLE_RANK[state.me.role] || 0) >= ROLE_RANK[role];
}

async function signIn(token) {
  const me = await api('/api/v1/me', { token });
  state.token = token;
  state.me = me;
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById('signin').hidden = true;
  document.getElementById('app').hidden = false;
  applyRoles();
  renderWho();
  startFeed();
  loadCameraNames();
  const wanted = location.hash.slice(1);
  showTab(tabAllowed(wanted) ? wanted : (can('enroller') ? 'enrol' : 'alerts'));
}

function signOut(message) {
  stopFeed();
  stopCameraPoll();
  state.token = null;
  state.me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  state.feed.items.clear();
  state.owners.page = null;
  state.events.page = null;
  state.cameras = [];
  state.watch.list = null;
  state.search.result = null;
  clearSnapshots();
  for (const f of ['watch-form', 'search-form']) $(f).reset();
  for (const m of ['watch-result', 'search-result']) showMsg($(m), '');
  document.getElementById('app').hidden = true;
  document.getElementById('signin').hidden = false;
  $('signin-token').value = '';
  showMsg($('signin-error'), message || '', 'error');
  // Nothing of the previous user's data stays in the page.
  renderWho();
  renderFeed();
  renderOwners();
  renderEvents();
  renderCameras();
  renderWatch();
  renderSearch();
  $('signin-token').focus();
}

function renderWho() {
  const box = $('whoami-box');
  box.hidden = !state.me;
  if (!state.me) return;
  $('whoami').textContent = state.me.name;
  $('whoami-role').textContent = t('role_' + state.me.role);
  $('whoami-role').dataset.role = state.me.role;
}

/** Hide what the token's role cannot do (the server refuses it anyway). */
function applyRoles() {
  for (const node of document.querySelectorAll('[data-min-role]')) {
    const ok = can(node.dataset.minRole);
    if (node.tagName === 'SECTION') {
      if (!ok) node.hidden = true;
    } else {
      node.hidden = !ok;
    }
  }
}

function tabAllowed(name) {
  const btn = document.querySelector(`nav [data-tab="${CSS.escape(name)}"]`);
  return !!btn && (!btn.dataset.minRole || can(btn.dataset.minRole));
}

function showTab(name) {
  if (!tabAllowed(name)) return;
  state.tab = name;
  if (location.hash !== '#' + name) history.replaceState(null, '', '#' + name);
  for (const btn of document.querySelectorAll('nav [data-tab]')) {
    const on = btn.dataset.tab === name;
    btn.setAttribute('aria-current', on ? 'page' : 'false');
  }
  for (const sec of document.querySelectorAll('main section[id^="tab-"]')) {
    sec.hidden = sec.id !== 'tab-' + name;
  }
  if (name === 'cameras') startCameraPoll();
  else stopCameraPoll();
  if (name === 'owners') loadOwners();
  if (name === 'events') loadEvents();
  if (name === 'alerts') {
    state.feed.unread = 0;
    renderUnread();
  }
  if (name === 'enrol') loadCameraNames();
  if (name === 'watchlist') loadWatch();
}

// ---------------------------------------------------------------------------
// Enrol
function clearSnapshots() {
  for (const s of state.snapshots) URL.revokeObjectURL(s.url);
  state.snapshots = [];
  renderPreviews();
}

function renderPreviews() {
  const list = $('enrol-previews');
  list.replaceChildren();
  state.snapshots.forEach((s, i) => {
    const label = t('snapshot_from', s.camera);
    list.append(el('li', { 'data-testid': 'enrol-preview' },
      el('img', { src: s.url, alt: label, 'data-testid': 'enrol-preview-img' }),
      el('span', { text: label }),
      el('button', {
        type: 'button', text: t('remove'), 'data-testid': 'enrol-preview-remove',
        onclick: () => { URL.revokeObjectURL(s.url); state.snapshots.splice(i, 1); renderPreviews(); },
      })));
  });
}

async function loadCameraNames() {
  try {
    const cams = await api('/api/v1/cameras');
    state.cameras = Array.isArray(cams) ? cams : [];
  } catch (e) {
    state.cameras = [];
  }
  const names = state.cameras.map((c) => c.name);
  for (const testid of ['enrol-camera', 'events-camera']) {
    const sel = $(testid);
    const keep = sel.value;
    const opts = testid === 'events-camera'
      ? [el('option', { value: '', text: t('any') })]
      : (names.length ? [] : [el('option', { value: '', text: t('no_cameras') })]);
    for (const n of names) opts.push(el('option', { value: n, text: n }));
    sel.replaceChildren(...opts);
    if (names.includes(keep)) sel.value = keep;
  }
  $('enrol-snapshot').disabled = names.length === 0;
}

async function takeSnapshot() {
  const cam = $('enrol-camera').value;
  const out = $('enrol-result');
  if (!cam) return;
  $('enrol-snapshot').disabled = true;
  try {
    const blob = await api(`/api/v1/cameras/${enc(cam)}/snapshot`, { raw: true });
    state.snapshots.push({ blob, url: URL.createObjectURL(blob), camera: cam });
    renderPreviews();
    showMsg(out, '');
  } catch (e) {
    showMsg(out, errText(e), 'error');
  } finally {
    $('enrol-snapshot').disabled = false;
  }
}

async function submitEnrol(ev) {
  ev.preventDefault();
  const form = ev.target;
  const out = $('enrol-result');
  const v = (id) => $(id).value.trim();
  const files = Array.from($('enrol-photos').files || []);
  const minor = $('enrol-minor').checked;
  if (!v('enrol-id') || !v('enrol-name')) return showMsg(out, t('need_id_name'));
  if (minor && !v('enrol-guardian-name')) return showMsg(out, t('need_guardian'));
  if (!$('enrol-consent').checked) return showMsg(out, t('need_consent'));
  if (files.length + state.snapshots.length === 0) return showMsg(out, t('need_photo'));

  const fd = new FormData();
  fd.append('id', v('enrol-id'));
  fd.append('name', v('enrol-name'));
  for (const [field, id] of [['building', 'enrol-building'], ['unit', 'enrol-unit'], ['grid_code', 'enrol-grid'],
    ['consent_taken_by', 'enrol-consent-taken-by']]) {
    if (v(id)) fd.append(field, v(id));
  }
  fd.append('minor_under_14', minor ? 'true' : 'false');
  if (minor) {
    fd.append('guardian_name', v('enrol-guardian-name'));
    if (v('enrol-guardian-relation')) fd.append('guardian_relation', v('enrol-guardian-relation'));
  }
  fd.append('consent_method', $('enrol-consent-method').value);
  const givenAt = localToRfc3339($('enrol-consent-given-at').value);
  if (givenAt) fd.append('consent_given_at', givenAt);
  for (const f of files) fd.append('photo', f, f.name);
  state.snapshots.forEach((s, i) => fd.append('photo', s.blob, `snapshot-${s.camera}-${i + 1}.jpg`));

  const btn = $('enrol-submit');
  btn.disabled = true;
  showMsg(out, t('enrolling'), 'busy');
  try {
    const owner = await api('/api/v1/owners', { method: 'POST', body: fd });
    const n = Array.isArray(owner.templates) ? owner.templates.length : (owner.template_count ?? files.length);
    showMsg(out, t('enrolled', owner.id, owner.name, n), 'ok');
    form.reset();
    document.getElementById('guardian').hidden = true;
    clearSnapshots();
    state.owners.page = null;
  } catch (e) {
    showMsg(out, errText(e), 'error');
  } finally {
    btn.disabled = false;
  }
}

// ---------------------------------------------------------------------------
// Owners
async function loadOwners() {
  const o = state.owners;
  const errBox = $('owners-error');
  try {
    o.page = await api('/api/v1/owners', { query: { q: o.q, status: o.status, limit: o.limit, offset: o.offset } });
    if (o.message) showMsg(errBox, o.message, 'ok');
    else showMsg(errBox, '');
    o.message = null;
  } catch (e) {
    o.page = null;
    showMsg(errBox, errText(e));
  }
  renderOwners();
}

function renderOwners() {
  const tbody = $('owners-table').querySelector('tbody');
  const page = state.owners.page;
  tbody.replaceChildren();
  if (!page) {
    $('owners-total').textContent = '';
    return;
  }
  const items = Array.isArray(page.items) ? page.items : [];
  for (const ow of items) {
    const actions = el('div', { class: 'actions' });
    if (ow.status === 'suspended') {
      actions.append(el('button', { type: 'button', text: t('activate'), 'data-testid': 'owner-activate',
        onclick: () => ownerAction(ow, 'activate') }));
    } else {
      actions.append(el('button', { type: 'button', text: t('suspend'), 'data-testid': 'owner-suspend',
        onclick: () => ownerAction(ow, 'suspend') }));
    }
    if (can('admin')) {
      actions.append(el('button', { type: 'button', class: 'danger', text: t('erase'), 'data-testid': 'owner-erase',
        onclick: () => eraseOwner(ow) }));
    }
    const name = el('td', {}, ow.name);
    if (ow.minor_under_14) name.append(' ', el('span', { class: 'tag', text: t('minor_tag') }));
    tbody.append(el('tr', { 'data-testid': 'owner-row', 'data-owner-id': ow.id, 'data-status': ow.status },
      el('td', { text: ow.id }), name, el('td', { text: ow.building ?? '' }), el('td', { text: ow.unit ?? '' }),
      el('td', { text: ow.grid_code ?? '' }),
      el('td', { 'data-testid': 'owner-status' }, el('span', { class: 'st-' + ow.status, text: t('st_' + ow.status) })),
      el('td', { text: ow.template_count ?? '' }), el('td', { text: fmtTime(ow.created_at) }), el('td', {}, actions)));
  }
  const total = page.total ?? items.length;
  const offset = page.offset ?? state.owners.offset;
  $('owners-total').textContent = items.length
    ? t('owners_range', offset + 1, offset + items.length, total) : t('owners_none');
  $('owners-prev').disabled = offset <= 0;
  $('owners-next').disabled = offset + items.length >= total;
}

async function ownerAction(ow, action) {
  try {
    await api(`/api/v1/owners/${enc(ow.id)}/${action}`, { method: 'POST' });
  } catch (e) {
    showMsg($('owners-error'), errText(e));
    return;
  }
  await loadOwners();
}

async function eraseOwner(ow) {
  if (!window.confirm(t('confirm_erase', ow.id, ow.name))) return;
  try {
    await api(`/api/v1/owners/${enc(ow.id)}`, { method: 'DELETE' });
    state.owners.message = t('erased', ow.id);
  } catch (e) {
    showMsg($('owners-error'), errText(e));
    return;
  }
  await loadOwners();
}

// ---------------------------------------------------------------------------
// Live feed (server-sent events)
function startFeed() {
  stopFeed();
  const f = state.feed;
  const src = new EventSource(tokenUrl('/api/v1/events/stream'));
  f.source = src;
  setFeedStatus('connecting');
  src.addEventListener('open', () => {
    f.retryMs = 1000;
    setFeedStatus('open');
  });
  src.addEventListener('error', () => {
    if (f.source !== src) return;
    if (src.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. a 401 or a non-SSE answer): check the token, then retry with backoff.
      f.source = null;
      setFeedStatus('error');
      f.retryTimer = setTimeout(async () => {
        f.retryTimer = null;
        if (!state.token) return;
        try {
          await api('/api/v1/me');
        } catch (e) {
          if (e.status === 401) return; // api() signed us out
        }
        if (state.token) startFeed();
      }, f.retryMs);
      f.retryMs = Math.min(f.retryMs * 2, 30000);
    } else {
      setFeedStatus('error'); // the browser reconnects by itself
    }
  });
  // Named events only fire their own listeners, not 'message'.
  for (const kind of EVENT_KINDS) src.addEventListener(kind, onFeedMessage);
  src.addEventListener('message', onFeedMessage);
}

function stopFeed() {
  const f = state.feed;
  if (f.retryTimer) clearTimeout(f.retryTimer);
  f.retryTimer = null;
  if (f.source) f.source.close();
  f.source = null;
  setFeedStatus('closed');
}

function setFeedStatus(s) {
  state.feed.status = s;
  renderFeedState();
}

function renderFeedState() {
  const node = $('feed-state');
  node.dataset.state = state.feed.status;
  node.textContent = t('feed_' + state.feed.status);
}

function onFeedMessage(msg) {
  let ev;
  try {
    ev = JSON.parse(msg.data);
  } catch (_) {
    return;
  }
  if (!ev || typeof ev.id !== 'string') return;
  if (!ev.kind && msg.type !== 'message') ev.kind = msg.type;
  const items = state.feed.items;
  const prev = items.get(ev.id);
  // A later revision of the same event replaces it (in place); older or repeated ones are ignored.
  if (prev && (ev.revision ?? 0) <= (prev.revision ?? 0)) return;
  if (prev) items.delete(ev.id);
  items.set(ev.id, ev);
  while (items.size > FEED_MAX) items.delete(items.keys().next().value);
  if (state.tab !== 'alerts' && isAlert(ev) && !prev) {
    state.feed.unread += 1;
    renderUnread();
  }
  renderFeed();
}

function renderUnread() {
  const b = $('alerts-unread');
  b.textContent = String(state.feed.unread);
  b.hidden = state.feed.unread === 0;
}

function subjectText(ev) {
  if (ev.subject && ev.subject.name) {
    let s = ev.subject.name;
    if (ev.subject.kind === 'owner' && ev.subject.id !== undefined) s += ` (${ev.subject.id})`;
    return s;
  }
  if (ev.stranger_id) return t('stranger_label', ev.stranger_id);
  if (ev.reason) return ev.reason;
  return '';
}

function kindBadge(ev) {
  const pri = ev.priority || (ev.subject && ev.subject.priority);
  const b = el('span', { class: `kind k-${ev.kind}`, 'data-testid': 'event-kind' }, t('k_' + ev.kind));
  if (ev.kind === 'watchlist' && pri) b.append(' · ', t('priority', pri));
  if (ev.repeat) b.append(' · ', t('repeat'));
  return b;
}

function faceImg(ev) {
  if (!ev.snapshot) return null;
  return el('img', {
    class: 'face', loading: 'lazy', alt: subjectText(ev), 'data-testid': 'event-face',
    src: tokenUrl(`/api/v1/events/${enc(ev.id)}/snapshot/face`),
  });
}

function renderFeed() {
  const list = $('feed-list');
  const alertsOnly = $('feed-alerts-only').checked;
  const evs = Array.from(state.feed.items.values())
    .filter((ev) => !alertsOnly || isAlert(ev))
    .sort((a, b) => (Date.parse(b.ts) || 0) - (Date.parse(a.ts) || 0));
  const rows = evs.map((ev) => el('li', {
    class: `feed-item k-${ev.kind}${isAlert(ev) ? ' alert' : ''}`,
    'data-testid': 'alert-row', 'data-kind': ev.kind, 'data-event-id': ev.id, 'data-revision': ev.revision ?? 0,
  },
  faceImg(ev) || el('span', { class: 'face none', 'aria-hidden': 'true' }),
  el('div', { class: 'body' },
    el('div', {}, kindBadge(ev), ' ', el('strong', { 'data-testid': 'event-who', text: subjectText(ev) })),
    el('div', { class: 'meta' },
      el('time', { datetime: ev.ts, text: fmtTime(ev.ts) }), ' · ',
      el('span', { 'data-testid': 'event-camera', text: ev.camera }),
      typeof ev.score === 'number' ? ` · ${t('score')} ${fmtNum(ev.score)}` : ''))));
  list.replaceChildren(...rows);
  $('feed-empty').hidden = rows.length > 0;
}

// ---------------------------------------------------------------------------
// Event browser
function readEventQuery() {
  return {
    since: localToRfc3339($('events-since').value),
    until: localToRfc3339($('events-until').value),
    camera: $('events-camera').value,
    kind: $('events-kind').value,
    owner: $('events-owner').value.trim(),
  };
}

async function loadEvents() {
  const e = state.events;
  try {
    e.page = await api('/api/v1/events', { query: { ...e.query, limit: e.limit, offset: e.offset } });
    showMsg($('events-error'), '');
  } catch (err) {
    e.page = null;
    showMsg($('events-error'), errText(err));
  }
  renderEvents();
}

function renderEvents() {
  const tbody = $('events-table').querySelector('tbody');
  const page = state.events.page;
  tbody.replaceChildren();
  if (!page) {
    $('events-page').textContent = '';
    return;
  }
  const items = Array.isArray(page.items) ? page.items : [];
  for (const ev of items) {
    const tr = el('tr', {
      'data-testid': 'event-row', 'data-kind': ev.kind, 'data-event-id': ev.id, tabindex: 0,
      class: `clickable k-${ev.kind}${isAlert(ev) ? ' alert' : ''}`,
      onclick: () => openScene(ev),
      onkeydown: (k) => { if (k.key === 'Enter' || k.key === ' ') { k.preventDefault(); openScene(ev); } },
    },
    el('td', {}, el('time', { datetime: ev.ts, text: fmtTime(ev.ts) })),
    el('td', { text: ev.camera }), el('td', {}, kindBadge(ev)), el('td', { text: subjectText(ev) }),
    el('td', { text: fmtNum(ev.score) }), el('td', {}, faceImg(ev)));
    tbody.append(tr);
  }
  const offset = page.offset ?? state.events.offset;
  const limit = page.limit ?? state.events.limit;
  $('events-page').textContent = items.length
    ? t('events_page', Math.floor(offset / limit) + 1, items.length) : t('events_none');
  $('events-prev').disabled = offset <= 0;
  $('events-next').disabled = items.length < limit;
}

function openScene(ev) {
  const dlg = $('event-dialog');
  const img = $('event-scene');
  $('event-dialog-info').textContent =
    [fmtTime(ev.ts), ev.camera, t('k_' + ev.kind), subjectText(ev)].filter(Boolean).join(' · ');
  if (ev.snapshot) {
    img.src = tokenUrl(`/api/v1/events/${enc(ev.id)}/snapshot/scene`);
    img.alt = t('scene');
    img.hidden = false;
  } else {
    img.removeAttribute('src');
    img.hidden = true;
    $('event-dialog-info').textContent += ' — ' + t('no_snapshot');
  }
  dlg.showModal();
}

// ---------------------------------------------------------------------------
// Cameras
function startCameraPoll() {
  stopCameraPoll();
  const tick = async () => {
    await loadCameras();
    if (state.tab === 'cameras' && state.token) state.cameraTimer = setTimeout(tick, CAMERA_POLL_MS);
  };
  tick();
}

function stopCameraPoll() {
  if (state.cameraTimer) clearTimeout(state.cameraTimer);
  state.cameraTimer = null;
}

async function loadCameras() {
  try {
    const cams = await api('/api/v1/cameras');
    state.cameras = Array.isArray(cams) ? cams : [];
    showMsg($('cameras-error'), '');
  } catch (e) {
    showMsg($('cameras-error'), errText(e));
  }
  renderCameras();
}

function lastFrameText(c) {
  if (c.last_frame_at) return fmtTime(c.last_frame_at);
  if (typeof c.last_frame_age_s === 'number') return t('seconds_ago', c.last_frame_age_s.toFixed(1));
  return '';
}

function renderCameras() {
  const tbody = $('cameras-table').querySelector('tbody');
  tbody.replaceChildren(...state.cameras.map((c) => el('tr', {
    'data-testid': 'camera-row', 'data-camera': c.name, 'data-state': c.state,
  },
  el('td', { text: c.name }), el('td', { text: c.role ? t('cr_' + c.role) : '' }),
  el('td', { 'data-testid': 'camera-state' }, el('span', { class: 'cs cs-' + c.state, text: t('cs_' + c.state) })),
  el('td', { text: fmtNum(c.fps_in, 1) }), el('td', { text: fmtNum(c.fps_taken, 1) }),
  el('td', { text: c.drops_total ?? '' }), el('td', { text: lastFrameText(c) }),
  el('td', { class: 'err', text: c.last_error ?? '' }))));
}

// ---------------------------------------------------------------------------
// Watch list (布控/寻人)
const PRIORITIES = ['low', 'normal', 'high', 'critical'];

async function loadWatch() {
  const w = state.watch;
  const out = $('watch-result');
  try {
    const list = await api('/api/v1/watchlist');
    w.list = Array.isArray(list) ? list : [];
    if (w.message) showMsg(out, w.message, 'ok');
    w.message = null;
  } catch (e) {
    w.list = null;
    showMsg(out, errText(e), 'error');
  }
  renderWatch();
}

function priorityBadge(p) {
  const known = PRIORITIES.includes(p);
  return el('span', { class: `prio pr-${known ? p : 'unknown'}`, 'data-testid': 'watch-priority-badge', 'data-priority': p },
    known ? t('pr_' + p) : String(p ?? ''));
}

function renderWatch() {
  const tbody = $('watch-table').querySelector('tbody');
  const list = state.watch.list;
  tbody.replaceChildren();
  $('watch-empty').hidden = !(list && list.length === 0);
  if (!list) return;
  const admin = can('admin');
  for (const w of list) {
    const expires = el('td', { 'data-testid': 'watch-expires-at' },
      w.expires_at ? el('time', { datetime: w.expires_at, text: fmtTime(w.expires_at) }) : t('never'));
    if (w.expired) expires.append(' ', el('span', { class: 'tag expired', 'data-testid': 'watch-expired', text: t('expired_tag') }));
    const cells = [
      el('td', { 'data-testid': 'watch-entry-name' }, el('strong', { text: w.name })),
      el('td', { 'data-testid': 'watch-entry-reason', text: w.reason }),
      el('td', {}, priorityBadge(w.priority)),
      expires,
      el('td', { 'data-testid': 'watch-templates', text: w.template_count ?? '' }),
      el('td', { text: fmtTime(w.created_at) }, w.created_by ? el('div', { class: 'meta', text: w.created_by }) : null),
    ];
    if (admin) {
      cells.push(el('td', {}, el('div', { class: 'actions' }, el('button', {
        type: 'button', class: 'danger', text: t('remove'), 'data-testid': 'watch-remove',
        onclick: () => removeWatch(w),
      }))));
    }
    tbody.append(el('tr', {
      'data-testid': 'watch-row', 'data-watch-id': w.id, 'data-priority': w.priority,
      'data-expired': w.expired ? 'true' : 'false', class: w.expired ? 'expired' : null,
    }, ...cells));
  }
}

async function submitWatch(ev) {
  ev.preventDefault();
  const out = $('watch-result');
  const name = $('watch-name').value.trim();
  const reason = $('watch-reason').value.trim();
  const files = Array.from($('watch-photos').files || []);
  if (!name || !reason) return showMsg(out, t('need_name_reason'));
  if (files.length === 0) return showMsg(out, t('need_photo'));
  const fd = new FormData();
  fd.append('name', name);
  fd.append('reason', reason);
  fd.append('priority', $('watch-priority').value);
  const expires = localToRfc3339($('watch-expires').value);
  if (expires) fd.append('expires_at', expires);
  for (const f of files) fd.append('photo', f, f.name);

  const btn = $('watch-submit');
  btn.disabled = true;
  showMsg(out, t('watch_adding'), 'busy');
  try {
    const entry = await api('/api/v1/watchlist', { method: 'POST', body: fd });
    state.watch.message = t('watch_added', entry.name, entry.template_count ?? files.length);
    ev.target.reset();
  } catch (e) {
    showMsg(out, errText(e), 'error');
    return;
  } finally {
    btn.disabled = false;
  }
  await loadWatch();
}

async function removeWatch(w) {
  if (!window.confirm(t('confirm_watch_remove', w.name, w.reason))) return;
  try {
    await api(`/api/v1/watchlist/${enc(w.id)}`, { method: 'DELETE' });
    state.watch.message = t('watch_removed', w.name);
  } catch (e) {
    showMsg($('watch-result'), errText(e), 'error');
    return;
  }
  await loadWatch();
}

// ---------------------------------------------------------------------------
// Search by photo (以脸搜脸)
async function submitSearch(ev) {
  ev.preventDefault();
  const out = $('search-result');
  const file = ($('search-photo').files || [])[0];
  if (!file) return showMsg(out, t('need_search_photo'));
  const fd = new FormData();
  fd.append('photo', file, file.name);
  const limit = $('search-limit').value.trim();
  const minScore = $('search-min-score').value.trim();
  if (limit) fd.append('limit', limit);
  if (minScore) fd.append('min_score', minScore);

  const btn = $('search-submit');
  btn.disabled = true;
  state.search.result = null;
  renderSearch();
  showMsg(out, t('searching'), 'busy');
  try {
    state.search.result = await api('/api/v1/search/face', { method: 'POST', body: fd });
    showMsg(out, '');
  } catch (e) {
    showMsg(out, errText(e), 'error');
  } finally {
    btn.disabled = false;
  }
  renderSearch();
}

function renderSearch() {
  const r = state.search.result;
  const summary = $('search-summary');
  const table = $('search-table');
  const tbody = table.querySelector('tbody');
  tbody.replaceChildren();
  if (!r) {
    summary.hidden = true;
    summary.textContent = '';
    table.hidden = true;
    return;
  }
  const hits = (Array.isArray(r.hits) ? r.hits : [])
    .filter((h) => h && h.event && typeof h.event.id === 'string')
    .slice().sort((a, b) => (b.score ?? -2) - (a.score ?? -2));
  summary.hidden = false;
  summary.textContent = t('searched', r.searched ?? 0, hits.length, fmtNum(r.min_score));
  if (hits.length === 0) summary.append(' ', t('no_hits'));
  table.hidden = hits.length === 0;
  for (const h of hits) {
    const ev = h.event;
    tbody.append(el('tr', {
      'data-testid': 'search-hit', 'data-event-id': ev.id, 'data-kind': ev.kind,
      'data-subject-id': ev.subject && ev.subject.id !== undefined ? String(ev.subject.id) : null,
      'data-stranger-id': ev.stranger_id || null, tabindex: 0,
      class: `clickable k-${ev.kind}`,
      onclick: () => openScene(ev),
      onkeydown: (k) => { if (k.key === 'Enter' || k.key === ' ') { k.preventDefault(); openScene(ev); } },
    },
    el('td', { 'data-testid': 'search-hit-score' }, el('strong', { text: fmtNum(h.score, 3) })),
    el('td', {}, el('time', { datetime: ev.ts, text: fmtTime(ev.ts) })),
    el('td', { 'data-testid': 'search-hit-camera', text: ev.camera }),
    el('td', {}, kindBadge(ev)),
    el('td', { 'data-testid': 'search-hit-who', text: subjectText(ev) }),
    el('td', {}, faceImg(ev))));
  }
}

// ---------------------------------------------------------------------------
// Wiring
function wire() {
  $('lang-toggle').addEventListener('click', toggleLang);
  $('signout').addEventListener('click', () => signOut());
  $('signin-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = $('signin-token').value.trim();
    const errBox = $('signin-error');
    if (!token) return showMsg(errBox, t('token_empty'));
    $('signin-submit').disabled = true;
    try {
      await signIn(token);
      showMsg(errBox, '');
    } catch (e) {
      showMsg(errBox, e.status === 401 ? t('bad_token') : errText(e));
    } finally {
      $('signin-submit').disabled = false;
    }
  });
  for (const btn of document.querySelectorAll('nav [data-tab]')) {
    btn.addEventListener('click', () => showTab(btn.dataset.tab));
  }
  window.addEventListener('hashchange', () => {
    const name = location.hash.slice(1);
    if (state.me && name !== state.tab && tabAllowed(name)) showTab(name);
  });

  $('enrol-minor').addEventListener('change', (e) => { document.getElementById('guardian').hidden = !e.target.checked; });
  $('enrol-snapshot').addEventListener('click', takeSnapshot);
  $('enrol-form').addEventListener('submit', submitEnrol);

  $('owners-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const o = state.owners;
    o.q = $('owners-q').value.trim();
    o.status = $('owners-status').value;
    o.limit = Number($('owners-limit').value) || 50;
    o.offset = 0;
    loadOwners();
  });
  $('owners-prev').addEventListener('click', () => {
    state.owners.offset = Math.max(0, state.owners.offset - state.owners.limit);
    loadOwners();
  });
  $('owners-next').addEventListener('click', () => {
    state.owners.offset += state.owners.limit;
    loadOwners();
  });

  $('feed-alerts-only').addEventListener('change', renderFeed);
  $('feed-clear').addEventListener('click', () => { state.feed.items.clear(); renderFeed(); });

  $('events-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    state.events.query = readEventQuery();
    state.events.offset = 0;
    loadEvents();
  });
  $('events-prev').addEventListener('click', () => {
    state.events.offset = Math.max(0, state.events.offset - state.events.limit);
    loadEvents();
  });
  $('events-next').addEventListener('click', () => {
    state.events.offset += state.events.limit;
    loadEvents();
  });
  $('watch-form').addEventListener('submit', submitWatch);
  $('search-form').addEventListener('submit', submitSearch);
  $('event-dialog').addEventListener('close', () => $('event-scene').removeAttribute('src'));
}

async function main() {
  wire();
  applyLang();
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    try {
      await signIn(saved);
      return;
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      showMsg($('signin-error'), e.status === 401 ? t('signed_out_expired') : errText(e));
    }
  }
  document.getElementById('signin').hidden = false;
  $('signin-token').focus();
}

main();
