--- Ghost text for textDocument/inlineCompletion.
---
--- Neovim 0.12+ has vim.lsp.inline_completion: attach_native() turns it on and maps keys.
--- On 0.11 attach() renders the first item itself: the first line as inline virtual text at
--- the cursor, the other lines as virtual lines below, requested after a debounce in insert
--- mode and dropped on any edit, cursor move or mode change.
local M = {}

local api = vim.api
local METHOD = 'textDocument/inlineCompletion'
local TRIGGER_AUTOMATIC = 2

M.ns = api.nvim_create_namespace('dgls.ghost')

---@class dgls.Suggestion
---@field text string       what is shown after the cursor
---@field row integer       0-based cursor row the suggestion belongs to
---@field col integer       byte column of the cursor
---@field replace_end integer[]?  {row, col}: text the server wants replaced after the cursor
---@field command lsp.Command?
---@field client vim.lsp.Client

---@type table<integer, {timer: uv.uv_timer_t?, request: {client: vim.lsp.Client, id: integer}?, shown: dgls.Suggestion?, own_tick: integer?, hl_group: string?}>
local buffers = {}

local function state(bufnr)
  if bufnr == 0 then
    bufnr = api.nvim_get_current_buf()
  end
  buffers[bufnr] = buffers[bufnr] or {}
  return buffers[bufnr]
end

local function cancel(bufnr)
  local st = state(bufnr)
  if st.timer then
    st.timer:stop()
  end
  local req = st.request
  if req and req.client.requests[req.id] then
    req.client:cancel_request(req.id)
  end
  st.request = nil
end

--- Remove the ghost text (and forget the suggestion).
function M.clear(bufnr)
  state(bufnr).shown = nil
  if api.nvim_buf_is_valid(bufnr) then
    api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

---@return dgls.Suggestion?
function M.current(bufnr)
  return state(bufnr).shown
end

local function render(bufnr, s, hl_group)
  api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  local lines = vim.split(s.text, '\n', { plain = true })
  local virt_lines = {}
  for i = 2, #lines do
    virt_lines[#virt_lines + 1] = { { lines[i], hl_group } }
  end
  api.nvim_buf_set_extmark(bufnr, M.ns, s.row, s.col, {
    virt_text = { { lines[1], hl_group } },
    virt_text_pos = 'inline',
    virt_lines = #virt_lines > 0 and virt_lines or nil,
    hl_mode = 'combine',
  })
end

local function item_text(item)
  local text = item.insertText
  if type(text) == 'table' then
    -- A snippet: show and insert its text without the tabstops.
    text = (text.value or ''):gsub('%${%d+:([^}]*)}', '%1'):gsub('%$%d+', '')
  end
  return type(text) == 'string' and text or nil
end

--- Turn an InlineCompletionItem into what to show at the cursor, or nil if it cannot be shown
--- as text after the cursor (its range starts elsewhere with text that does not match).
local function suggestion(bufnr, client, item, row, col)
  local text = item_text(item)
  if not text or text == '' then
    return nil
  end
  local replace_end
  if item.range then
    local enc = client.offset_encoding
    local function bytes(pos)
      local line = api.nvim_buf_get_lines(bufnr, pos.line, pos.line + 1, true)[1] or ''
      return math.min(vim.str_byteindex(line, enc, pos.character, false), #line)
    end
    local start, stop = item.range.start, item.range['end']
    if start.line ~= row then
      return nil
    end
    local typed = api.nvim_buf_get_text(bufnr, row, bytes(start), row, col, {})[1]
    if text:sub(1, #typed) ~= typed then
      return nil
    end
    text = text:sub(#typed + 1)
    local stop_col = bytes(stop)
    if stop.line > row or stop_col > col then
      replace_end = { stop.line, stop_col }
    end
  end
  if text == '' then
    return nil
  end
  return { text = text, row = row, col = col, replace_end = replace_end, command = item.command, client = client }
end

local function request(bufnr, client, opts)
  if api.nvim_get_current_buf() ~= bufnr or not vim.startswith(api.nvim_get_mode().mode, 'i') then
    return
  end
  cancel(bufnr)
  local st = state(bufnr)
  local tick = api.nvim_buf_get_changedtick(bufnr)
  local cursor = api.nvim_win_get_cursor(0)
  local params = vim.lsp.util.make_position_params(0, client.offset_encoding)
  ---@diagnostic disable-next-line: inject-field
  params.context = { triggerKind = TRIGGER_AUTOMATIC }
  local ok, id = client:request(METHOD, params, function(err, result)
    if st.request and st.request.id == id then
      st.request = nil
    end
    if err or not result or not api.nvim_buf_is_valid(bufnr)
        or api.nvim_buf_get_changedtick(bufnr) ~= tick
        or api.nvim_get_current_buf() ~= bufnr
        or not vim.deep_equal(api.nvim_win_get_cursor(0), cursor)
        or not vim.startswith(api.nvim_get_mode().mode, 'i') then
      return
    end
    local items = result.items or result
    local s = items[1] and suggestion(bufnr, client, items[1], cursor[1] - 1, cursor[2])
    if s then
      st.shown = s
      render(bufnr, s, opts.hl_group)
    end
  end, bufnr)
  if ok then
    st.request = { client = client, id = id }
  end
end

local function schedule(bufnr, client, opts)
  local st = state(bufnr)
  st.timer = st.timer or assert(vim.uv.new_timer())
  st.timer:stop()
  st.timer:start(opts.debounce_ms, 0, vim.schedule_wrap(function()
    if api.nvim_buf_is_valid(bufnr) then
      request(bufnr, client, opts)
    end
  end))
end

local function insert(bufnr, s, text, replace_end)
  local lines = vim.split(text, '\n', { plain = true })
  local erow, ecol = s.row, s.col
  if replace_end then
    erow, ecol = replace_end[1], replace_end[2]
  end
  api.nvim_buf_set_text(bufnr, s.row, s.col, erow, ecol, lines)
  local row = s.row + #lines - 1
  local col = (#lines == 1 and s.col or 0) + #lines[#lines]
  api.nvim_win_set_cursor(0, { row + 1, col })
  return row, col
end

--- Insert the whole suggestion; false if none is shown.
function M.accept(bufnr)
  local s = state(bufnr).shown
  if not s then
    return false
  end
  cancel(bufnr)
  M.clear(bufnr)
  insert(bufnr, s, s.text, s.replace_end)
  if s.command then
    s.client:exec_cmd(s.command, { bufnr = bufnr })
  end
  return true
end

--- Insert the suggestion up to and including its first line break; the rest stays shown.
function M.accept_line(bufnr)
  local st = state(bufnr)
  local s = st.shown
  if not s then
    return false
  end
  local nl = s.text:find('\n', 1, true)
  if not nl then
    return M.accept(bufnr)
  end
  cancel(bufnr)
  local row, col = insert(bufnr, s, s.text:sub(1, nl), nil)
  local rest = { text = s.text:sub(nl + 1), row = row, col = col, replace_end = s.replace_end,
    command = s.command, client = s.client }
  if rest.replace_end and rest.replace_end[1] == s.row then
    -- The replaced text moved down with the inserted line break.
    rest.replace_end = { row, col + rest.replace_end[2] - s.col }
  end
  st.own_tick = api.nvim_buf_get_changedtick(bufnr)
  st.shown = rest
  render(bufnr, rest, st.hl_group or 'DglsGhostText')
  return true
end

--- Hide the suggestion; false if none is shown.
function M.dismiss(bufnr)
  if not state(bufnr).shown then
    return false
  end
  cancel(bufnr)
  M.clear(bufnr)
  return true
end

--- Map `lhs` in insert mode to `fn`, falling back to the key itself when `fn` returns false.
local function map(bufnr, lhs, fn, desc)
  if not lhs then
    return
  end
  vim.keymap.set('i', lhs, function()
    if not fn(bufnr) then
      api.nvim_feedkeys(vim.keycode(lhs), 'n', false)
    end
  end, { buffer = bufnr, desc = desc })
end

--- Built-in ghost text (Neovim 0.11).
function M.attach(client, bufnr, opts, keymaps)
  state(bufnr).hl_group = opts.hl_group
  local group = api.nvim_create_augroup('dgls.ghost.' .. bufnr, { clear = true })
  api.nvim_create_autocmd({ 'InsertEnter', 'TextChangedI' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      local st = state(bufnr)
      if st.own_tick and st.own_tick == api.nvim_buf_get_changedtick(bufnr) then
        return -- our own accept_line: keep showing the rest
      end
      st.own_tick = nil
      M.clear(bufnr)
      schedule(bufnr, client, opts)
    end,
  })
  api.nvim_create_autocmd('CursorMovedI', {
    group = group,
    buffer = bufnr,
    callback = function()
      local s = state(bufnr).shown
      local cursor = api.nvim_win_get_cursor(0)
      if s and (cursor[1] - 1 ~= s.row or cursor[2] ~= s.col) then
        M.clear(bufnr)
      end
    end,
  })
  api.nvim_create_autocmd({ 'InsertLeave', 'BufLeave' }, {
    group = group,
    buffer = bufnr,
    callback = function()
      cancel(bufnr)
      M.clear(bufnr)
    end,
  })
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    buffer = bufnr,
    callback = function(args)
      if args.data.client_id == client.id then
        cancel(bufnr)
        M.clear(bufnr)
        api.nvim_del_augroup_by_id(group)
        buffers[bufnr] = nil
      end
    end,
  })
  map(bufnr, keymaps.accept, M.accept, 'dgls: accept ghost text')
  map(bufnr, keymaps.accept_line, M.accept_line, 'dgls: accept one line of ghost text')
  map(bufnr, keymaps.dismiss, M.dismiss, 'dgls: dismiss ghost text')
end

--- Native inline completion (Neovim 0.12+): enable it and map accept; it draws its own text.
function M.attach_native(_, bufnr, keymaps)
  vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
  if keymaps.accept then
    vim.keymap.set('i', keymaps.accept, function()
      if not vim.lsp.inline_completion.get() then
        return keymaps.accept
      end
    end, { buffer = bufnr, expr = true, replace_keycodes = true, desc = 'dgls: accept inline completion' })
  end
end

return M
