--- dgls: diffusion infilling for Neovim >= 0.11 through the dgls language server.
---
---   require('dgls').setup({ cmd = { 'dgls', 'serve' }, settings = { model = '/path' } })
local M = {}

local NAME = 'dgls'

---@class dgls.Config
local defaults = {
  --- Command that starts the server on stdio.
  cmd = { 'dgls', 'serve' },
  filetypes = {
    'python', 'javascript', 'javascriptreact', 'typescript', 'typescriptreact',
    'go', 'rust', 'c', 'cpp', 'java', 'lua', 'sh', 'bash',
  },
  root_markers = { '.git' },
  --- The server's "dgls" section: model, device, dtype, maxSpanTokens, steps, debounceMs, logLevel.
  settings = {},
  ghost_text = {
    enabled = true,
    --- Only for the built-in renderer (Neovim 0.11); 0.12+ uses vim.lsp.inline_completion.
    debounce_ms = 150,
    hl_group = 'DglsGhostText',
  },
  --- Insert-mode keys while ghost text is shown (false: no mapping). Without ghost text
  --- each key does what it did before.
  keymaps = {
    accept = '<Tab>',
    accept_line = '<M-l>',
    dismiss = '<C-]>',
  },
}

---@type dgls.Config
M.config = vim.deepcopy(defaults)

--- Last `dgls/status` from the server.
M.status = { state = 'stopped', message = '' }

local function on_status(_, result)
  if type(result) ~= 'table' then
    return
  end
  M.status = { state = result.state or 'error', message = result.message or '' }
  vim.api.nvim_exec_autocmds('User', { pattern = 'DglsStatus', data = M.status, modeline = false })
  vim.cmd.redrawstatus({ bang = true })
end

--- A statusline component, e.g. `%{v:lua.require'dgls'.statusline()}`.
---@return string
function M.statusline()
  local st = M.status
  if st.state == 'stopped' then
    return ''
  end
  if st.state == 'error' and st.message ~= '' then
    return 'dgls: error (' .. st.message .. ')'
  end
  return 'dgls: ' .. st.state
end

---@param bufnr integer
---@return vim.lsp.Client?
function M.client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr, name = NAME })[1]
end

--- LSP position of a (0-based row, byte column) in the client's encoding.
local function lsp_position(bufnr, row, col, encoding)
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, true)[1]
  col = math.min(col, #line)
  return { line = row, character = vim.str_utfindex(line, encoding, col, false) }
end

--- LSP range of the last visual selection (inclusive end, linewise-aware).
local function selection_range(bufnr, encoding)
  local first = vim.api.nvim_buf_get_mark(bufnr, '<')
  local last = vim.api.nvim_buf_get_mark(bufnr, '>')
  local srow, scol, erow, ecol = first[1] - 1, first[2], last[1] - 1, last[2]
  local end_line = vim.api.nvim_buf_get_lines(bufnr, erow, erow + 1, true)[1]
  if vim.fn.visualmode() == 'V' then
    scol, ecol = 0, #end_line
  elseif vim.o.selection ~= 'exclusive' and ecol < #end_line then
    -- '> points at the last selected character: step past all of its bytes.
    ecol = ecol + 1 + vim.str_utf_end(end_line, ecol + 1)
  end
  return {
    start = lsp_position(bufnr, srow, scol, encoding),
    ['end'] = lsp_position(bufnr, erow, ecol, encoding),
  }
end

local function cursor_range(bufnr, encoding)
  local cursor = vim.api.nvim_win_get_cursor(0)
  local pos = lsp_position(bufnr, cursor[1] - 1, cursor[2], encoding)
  return { start = pos, ['end'] = pos }
end

--- Ask the server to run one of its commands on a range; its workspace/applyEdit does the edit.
---@param command string  dgls.infillSelection | dgls.rewriteSelection | dgls.completeHere
---@param use_selection boolean
local function run(command, use_selection)
  local bufnr = vim.api.nvim_get_current_buf()
  local client = M.client(bufnr)
  if not client then
    vim.notify('dgls: no dgls server attached to this buffer', vim.log.levels.WARN)
    return
  end
  local range = use_selection and selection_range(bufnr, client.offset_encoding)
    or cursor_range(bufnr, client.offset_encoding)
  if not use_selection and command ~= 'dgls.rewriteSelection' then
    command = 'dgls.completeHere'
  end
  local argument = {
    textDocument = {
      uri = vim.uri_from_bufnr(bufnr),
      version = vim.lsp.util.buf_versions[bufnr] or vim.b[bufnr].changedtick,
    },
    range = range,
  }
  client:exec_cmd({ title = command, command = command, arguments = { argument } }, { bufnr = bufnr },
    function(err)
      if err then
        vim.notify('dgls: ' .. (err.message or vim.inspect(err)), vim.log.levels.WARN)
      end
    end)
end

--- `:DglsInfill`: the visual selection with a range, else complete at the cursor.
function M.infill(use_selection)
  run('dgls.infillSelection', use_selection)
end

--- `:DglsRewrite`: regenerate the visual selection.
function M.rewrite(use_selection)
  if not use_selection then
    vim.notify('dgls: select the code to rewrite first', vim.log.levels.INFO)
    return
  end
  run('dgls.rewriteSelection', true)
end

function M.accept()
  return require('dgls.ghost').accept(vim.api.nvim_get_current_buf())
end

function M.accept_line()
  return require('dgls.ghost').accept_line(vim.api.nvim_get_current_buf())
end

function M.dismiss()
  return require('dgls.ghost').dismiss(vim.api.nvim_get_current_buf())
end

local function on_attach(client, bufnr)
  local cfg = M.config
  if not cfg.ghost_text.enabled
      or not client:supports_method('textDocument/inlineCompletion', bufnr) then
    return
  end
  if vim.lsp.inline_completion then
    require('dgls.ghost').attach_native(client, bufnr, cfg.keymaps)
  else
    require('dgls.ghost').attach(client, bufnr, cfg.ghost_text, cfg.keymaps)
  end
end

---@param opts dgls.Config?
function M.setup(opts)
  M.config = vim.tbl_deep_extend('force', vim.deepcopy(defaults), opts or {})
  local cfg = M.config
  -- An empty Lua table would be sent as a JSON array.
  local section = next(cfg.settings) and cfg.settings or vim.empty_dict()
  vim.api.nvim_set_hl(0, 'DglsGhostText', { link = 'Comment', default = true })
  vim.lsp.config(NAME, {
    cmd = cfg.cmd,
    filetypes = cfg.filetypes,
    root_markers = cfg.root_markers,
    settings = { dgls = section },
    init_options = { dgls = section },
    handlers = { ['dgls/status'] = on_status },
    on_attach = on_attach,
    on_exit = function()
      M.status = { state = 'stopped', message = '' }
    end,
  })
  vim.lsp.enable(NAME)
end

return M
