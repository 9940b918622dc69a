-- dgls: user commands. The server itself is registered by require("dgls").setup{}.
if vim.g.loaded_dgls then
  return
end
vim.g.loaded_dgls = true

vim.api.nvim_create_user_command('DglsInfill', function(args)
  require('dgls').infill(args.range > 0)
end, { range = true, desc = 'dgls: infill the visual selection, or complete at the cursor' })

vim.api.nvim_create_user_command('DglsRewrite', function(args)
  require('dgls').rewrite(args.range > 0)
end, { range = true, desc = 'dgls: rewrite the visual selection' })

vim.api.nvim_create_user_command('DglsStatus', function()
  print(require('dgls').statusline())
end, { desc = 'dgls: show the server status' })
